"""Raft snapshots of OpenBao/Vault integrated storage: save one to a file, restore one from a file.

Both need a token with ``sudo`` on ``sys/storage/raft/snapshot*`` (an operator's, never the service's). A snapshot
holds the whole barrier (every mount, key, policy and token), still encrypted by the cluster's keyring: restoring
it into another cluster brings that keyring along, so afterwards the restored cluster answers to the backed-up
cluster's unseal keys and tokens, not its own. ``cacert`` (``VAULT_CACERT``) is the PEM file of the CA that an ``https``
Vault's certificate must chain to (None: the system's trust store), as for every other connection to Vault.
"""

from __future__ import annotations

import time
from pathlib import Path

import requests

_CHUNK = 1 << 20


class SnapshotError(Exception):
    """Vault refused or failed a snapshot call (the message says which and why, without the token)."""


def _session(token: str | None, cacert: str | None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # as the service's client: traffic goes where VAULT_ADDR says
    session.verify = cacert or True
    if token is not None:
        session.headers["X-Vault-Token"] = token
    return session


def _refusal(what: str, response: requests.Response) -> SnapshotError:
    try:
        errors = "; ".join(response.json().get("errors", [])) or response.reason
    except ValueError:
        errors = response.text[:200] or response.reason
    return SnapshotError(f"{what}: Vault answered {response.status_code}: {errors}")


def save(addr: str, token: str, target: Path, *, timeout: float = 300, cacert: str | None = None) -> int:
    """Stream a snapshot of the raft storage at ``addr`` into ``target``; returns its size in bytes."""
    url = f"{addr.rstrip('/')}/v1/sys/storage/raft/snapshot"
    with _session(token, cacert) as session, session.get(url, stream=True, timeout=timeout) as response:
        if response.status_code != 200:
            raise _refusal("raft snapshot", response)
        size = 0
        with target.open("wb") as out:
            for chunk in response.iter_content(_CHUNK):
                out.write(chunk)
                size += len(chunk)
    if not size:
        raise SnapshotError("raft snapshot: Vault answered 200 with an empty body")
    return size


def restore(
    addr: str, token: str, source: Path, *, force: bool, timeout: float = 300, cacert: str | None = None
) -> None:
    """Restore the snapshot in ``source`` into the raft storage at ``addr``.

    ``force`` restores a snapshot of another cluster (``snapshot-force``), which a new stack always is: its own
    keyring and tokens are replaced by the snapshot's.
    """
    url = f"{addr.rstrip('/')}/v1/sys/storage/raft/{'snapshot-force' if force else 'snapshot'}"
    with _session(token, cacert) as session, source.open("rb") as body:
        response = session.post(url, data=body, timeout=timeout)
    if response.status_code not in (200, 204):
        raise _refusal("raft snapshot restore", response)


def sealed_after_restore(addr: str, *, within: float = 10, cacert: str | None = None) -> bool:
    """Whether the server at ``addr`` seals itself after a restore (it does, a moment after answering, when the
    snapshot came from a cluster with other unseal keys); waits up to ``within`` seconds to see it."""
    deadline = time.monotonic() + within
    with _session(None, cacert) as session:
        while True:
            response = session.get(f"{addr.rstrip('/')}/v1/sys/seal-status", timeout=within)
            if response.status_code != 200:
                raise _refusal("seal status", response)
            if response.json().get("sealed"):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
