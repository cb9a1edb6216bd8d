"""Transit key administration for operators (``credctl rotate-key``); the service's own token cannot do this."""

from __future__ import annotations

import hvac

from vault.errors import translated


@translated
def latest_version(client: hvac.Client, mount: str, key: str) -> int:
    return int(client.secrets.transit.read_key(name=key, mount_point=mount)["data"]["latest_version"])


@translated
def rotate(client: hvac.Client, mount: str, key: str) -> int:
    """Add a key version; new encryptions use it. Returns the new latest version."""
    client.secrets.transit.rotate_key(name=key, mount_point=mount)
    return latest_version(client, mount, key)


@translated
def set_min_decryption_version(client: hvac.Client, mount: str, key: str, version: int) -> None:
    """Refuse ciphertexts older than ``version`` (reversible until the old versions are trimmed).

    Through the adapter: hvac's helper rejects min_encryption_version == min_decryption_version, which the server
    accepts (vault-notes §1.8).
    """
    client.adapter.post(f"/v1/{mount}/keys/{key}/config", json={"min_decryption_version": version})
