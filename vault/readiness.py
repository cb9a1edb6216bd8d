"""Whether the service's Vault token can do its work: the capabilities on every path it uses, and the transit key.

``sys/capabilities-self`` answers for a restricted token (the ``default`` policy alone, a policy for another mount);
a probe encryption with a fixed context answers for any token, root included (a wrong transit mount or a missing
key). Each problem is one sentence naming the path and the fix, for ``/health/ready`` and the log.
"""

from __future__ import annotations

import base64
from typing import Any

import hvac

from vault.errors import VaultError, translated
from vault.store import CallContext, SecretStore

# A KV path of the shape the service writes (any workspace, any credential): the policy grants by that shape.
_PROBE_WORKSPACE, _PROBE_CREDENTIAL = "readiness", "00000000-0000-0000-0000-000000000000"
_PROBE_CONTEXT = base64.b64encode(b"readiness-probe").decode()
_PROBE_PLAINTEXT = base64.b64encode(b"ready?").decode()


def required_capabilities(store: SecretStore) -> dict[str, set[str]]:
    """Each path the service calls, and the capabilities its calls need there."""
    transit, key, kv = store.transit_mount, store.transit_key, store.kv_mount
    item = f"workspaces/{_PROBE_WORKSPACE}/credentials/{_PROBE_CREDENTIAL}"
    return {
        f"{transit}/encrypt/{key}": {"update"},
        f"{transit}/decrypt/{key}": {"update"},
        f"{transit}/rewrap/{key}": {"update"},
        f"{kv}/data/{item}": {"create", "read", "update"},
        f"{kv}/metadata/{item}": {"create", "read", "update", "delete"},
        f"{kv}/destroy/{item}": {"update"},
    }


def _missing(granted: list[str], needed: set[str]) -> set[str]:
    if "root" in granted:
        return set()
    return needed - set(granted) if "deny" not in granted else needed


async def problems(store: SecretStore, ctx: CallContext) -> list[str]:
    """What keeps the token from serving (empty: ready). Raises ``VaultUnavailable`` when Vault cannot answer."""
    client: hvac.Client = store._client
    needed = required_capabilities(store)

    def capabilities() -> dict[str, Any]:
        response: dict[str, Any] = client.sys.get_capabilities(paths=list(needed))
        return dict(response.get("data") or response)

    lacking: list[str] = []
    try:
        granted = await store._run(ctx, capabilities)
    except VaultError as exc:
        return [
            f"cannot check the token's capabilities (sys/capabilities-self: {type(exc).__name__}); re-run "
            "`credctl vault-bootstrap` so the service's policy allows it"
        ]
    for path, wanted in needed.items():
        missing = _missing(list(granted.get(path) or []), wanted)
        if missing:
            lacking.append(f"{' '.join(sorted(missing))} on {path}")
    if lacking:
        return [
            f"the token lacks {', '.join(lacking)}; give it the credentials-service policy (`credctl "
            "vault-bootstrap`) or fix CREDENTIALS_TRANSIT_MOUNT, CREDENTIALS_TRANSIT_KEY, CREDENTIALS_KV_MOUNT"
        ]

    def probe() -> None:
        client.secrets.transit.encrypt_data(
            name=store.transit_key, plaintext=_PROBE_PLAINTEXT, context=_PROBE_CONTEXT, mount_point=store.transit_mount
        )

    try:
        await store._run(ctx, translated(probe))
    except VaultError as exc:
        if type(exc).__name__ == "VaultUnavailable":
            raise
        return [
            f"transit key {store.transit_mount}/{store.transit_key} cannot encrypt ({type(exc).__name__}); run "
            "`credctl vault-bootstrap` or fix CREDENTIALS_TRANSIT_MOUNT and CREDENTIALS_TRANSIT_KEY"
        ]
    return []
