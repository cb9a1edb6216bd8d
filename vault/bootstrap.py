"""``credctl vault-bootstrap``: mounts, the transit key, the service policy and the audited headers (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from string import Template

import hvac

from vault.client import AUDITED_HEADERS
from vault.errors import translated

SERVICE_POLICY = "credentials-service"


@dataclass(frozen=True)
class Step:
    """One thing the bootstrap checked, and whether it had to change it."""

    what: str
    changed: bool

    def __str__(self) -> str:
        return f"{'created ' if self.changed else 'ok      '} {self.what}"


def render_policy(name: str, **values: str) -> str:
    """A policy from ``vault/policies/<name>.hcl`` with its ``${...}`` placeholders filled in."""
    text = resources.files("vault").joinpath("policies", f"{name}.hcl").read_text()
    return Template(text).substitute(values)


@translated
def bootstrap(client: hvac.Client, *, transit_mount: str, transit_key: str, kv_mount: str) -> list[Step]:
    """Bring Vault to the state the service needs; running it again changes nothing and says so."""
    steps: list[Step] = []
    mounts = client.sys.list_mounted_secrets_engines()["data"]

    if f"{transit_mount}/" not in mounts:
        client.sys.enable_secrets_engine("transit", path=transit_mount)
        steps.append(Step(f"transit engine at {transit_mount}/", True))
    else:
        steps.append(Step(f"transit engine at {transit_mount}/", False))

    kv = mounts.get(f"{kv_mount}/")
    if kv is None:
        client.sys.enable_secrets_engine("kv", path=kv_mount, options={"version": "2"})
        steps.append(Step(f"KV v2 engine at {kv_mount}/", True))
    elif (kv.get("options") or {}).get("version") != "2" or kv.get("type") != "kv":
        raise RuntimeError(f"{kv_mount}/ is mounted but is not KV version 2")
    else:
        steps.append(Step(f"KV v2 engine at {kv_mount}/", False))

    # Without disable_upsert, an encrypt call against a missing key silently creates one.
    upsert = client.adapter.get(f"/v1/{transit_mount}/config/keys")["data"]
    changed = not upsert.get("disable_upsert")
    if changed:
        client.adapter.post(f"/v1/{transit_mount}/config/keys", json={"disable_upsert": True})
    steps.append(Step(f"{transit_mount}/config/keys disable_upsert=true", changed))

    try:
        key = client.secrets.transit.read_key(name=transit_key, mount_point=transit_mount)["data"]
    except hvac.exceptions.InvalidPath:
        client.adapter.post(
            f"/v1/{transit_mount}/keys/{transit_key}",
            json={"type": "aes256-gcm96", "derived": True, "exportable": False, "allow_plaintext_backup": False},
        )
        steps.append(Step(f"transit key {transit_key} (aes256-gcm96, derived, not exportable)", True))
    else:
        if not key.get("derived"):
            raise RuntimeError(f"transit key {transit_key} exists but is not derived; refusing to use it")
        steps.append(Step(f"transit key {transit_key} (aes256-gcm96, derived, not exportable)", False))

    policy = render_policy("service", transit_mount=transit_mount, transit_key=transit_key, kv_mount=kv_mount)
    try:
        current = client.sys.read_policy(name=SERVICE_POLICY)["data"]["rules"]
    except hvac.exceptions.InvalidPath:
        current = None
    if current != policy:
        client.sys.create_or_update_policy(name=SERVICE_POLICY, policy=policy)
    steps.append(Step(f"policy {SERVICE_POLICY}", current != policy))

    audited = client.adapter.get("/v1/sys/config/auditing/request-headers")["data"].get("headers", {})
    for header in AUDITED_HEADERS:
        name = header.lower()
        changed = audited.get(name, {}).get("hmac") is not False
        if changed:
            client.adapter.post(f"/v1/sys/config/auditing/request-headers/{name}", json={"hmac": False})
        steps.append(Step(f"audited request header {name} (hmac=false)", changed))
    return steps
