"""``credctl vault-bootstrap``: mounts, the transit key, policies, the service's AppRole, audited headers and the audit
device check. Idempotent: each step reads first and writes only what differs, so a second run changes nothing."""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, TypeVar

import hvac
import hvac.exceptions

from vault.client import AUDITED_HEADERS
from vault.errors import translated

T = TypeVar("T")

SERVICE_POLICY = "credentials-service"
AUDITOR_POLICY = "credentials-auditor"
SERVICE_ROLE = "credentials-service"
TRANSIT_KEY_TYPE = "aes256-gcm96"

# Durations, not secrets.
DEFAULT_TOKEN_TTL = "1h"  # noqa: S105
DEFAULT_TOKEN_MAX_TTL = "4h"  # noqa: S105

_OPENBAO_DECLARATIVE = (
    "OpenBao refuses to enable audit devices through the API: declare one in the server's config file, e.g. "
    'audit "file" "file" { options { file_path = "/openbao/logs/audit.log" } } (see vault/server.hcl), '
    "then restart the server or send it SIGHUP"
)


class BootstrapError(RuntimeError):
    """Vault is in a state the bootstrap will not silently repair (it says what to do instead)."""


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


def seconds(duration: str | int) -> int:
    """A Vault duration (``90``, ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``) in seconds."""
    if isinstance(duration, int):
        return duration
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", duration)
    if not match:
        raise ValueError(f"not a duration: {duration!r} (use e.g. 30s, 15m, 1h, 7d)")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _while_kv_upgrades(call: Callable[[], T], seconds: float = 30.0) -> T:
    """``call()``, retried while a just-enabled KV v2 mount is still upgrading (it answers 400 for a moment)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except hvac.exceptions.InvalidRequest as exc:
            if "Upgrading from non-versioned to versioned" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


KV_MAX_VERSIONS = 10
"""Versions kept per credential by default (the KV mount's config; ``CREDENTIALS_MAX_VERSIONS``)."""


@translated
def bootstrap(
    client: hvac.Client,
    *,
    transit_mount: str,
    transit_key: str,
    kv_mount: str,
    approle_mount: str = "approle",
    role: str = SERVICE_ROLE,
    token_ttl: str | int = DEFAULT_TOKEN_TTL,
    token_max_ttl: str | int = DEFAULT_TOKEN_MAX_TTL,
    max_versions: int = KV_MAX_VERSIONS,
    secret_id_ttl: str | int = 0,
    secret_id_cidrs: tuple[str, ...] = (),
) -> list[Step]:
    """Bring Vault to the state the service needs; running it again changes nothing and says so.

    Every returned step is something the bootstrap may have to change; the audit device is checked apart
    (``check_audit_device``) because on OpenBao it is declared in the server's config, not made here.
    """
    steps: list[Step] = []
    mounts = client.sys.list_mounted_secrets_engines()["data"]

    if f"{transit_mount}/" not in mounts:
        client.sys.enable_secrets_engine("transit", path=transit_mount, description="credentials service: encryption")
        steps.append(Step(f"transit engine at {transit_mount}/", True))
    else:
        steps.append(Step(f"transit engine at {transit_mount}/", False))

    kv = mounts.get(f"{kv_mount}/")
    if kv is None:
        client.sys.enable_secrets_engine(
            "kv", path=kv_mount, options={"version": "2"}, description="credentials service: ciphertexts"
        )
        steps.append(Step(f"KV v2 engine at {kv_mount}/", True))
    elif (kv.get("options") or {}).get("version") != "2" or kv.get("type") != "kv":
        raise BootstrapError(f"{kv_mount}/ is mounted but is not KV version 2")
    else:
        steps.append(Step(f"KV v2 engine at {kv_mount}/", False))

    # The service writes no per-key metadata on create (one Vault round trip less): versions kept is the mount's.
    kv_config = _while_kv_upgrades(lambda: client.adapter.get(f"/v1/{kv_mount}/config")["data"])
    changed = kv_config.get("max_versions") != max_versions
    if changed:
        _while_kv_upgrades(lambda: client.adapter.post(f"/v1/{kv_mount}/config", json={"max_versions": max_versions}))
    steps.append(Step(f"{kv_mount}/config max_versions={max_versions}", changed))

    # Without disable_upsert, an encrypt call against a missing key silently creates one.
    upsert = client.adapter.get(f"/v1/{transit_mount}/config/keys")["data"]
    changed = not upsert.get("disable_upsert")
    if changed:
        client.adapter.post(f"/v1/{transit_mount}/config/keys", json={"disable_upsert": True})
    steps.append(Step(f"{transit_mount}/config/keys disable_upsert=true", changed))

    steps.append(_transit_key(client, transit_mount, transit_key))

    values = {"transit_mount": transit_mount, "transit_key": transit_key, "kv_mount": kv_mount, "role": role}
    for policy_name, template in ((SERVICE_POLICY, "service"), (AUDITOR_POLICY, "auditor")):
        steps.append(_policy(client, policy_name, render_policy(template, **values)))

    steps.extend(
        ensure_approle(
            client,
            approle_mount=approle_mount,
            role=role,
            token_ttl=token_ttl,
            token_max_ttl=token_max_ttl,
            secret_id_ttl=secret_id_ttl,
            secret_id_cidrs=secret_id_cidrs,
        )
    )

    audited = client.adapter.get("/v1/sys/config/auditing/request-headers")["data"].get("headers", {})
    for header in AUDITED_HEADERS:
        name = header.lower()
        changed = audited.get(name, {}).get("hmac") is not False
        if changed:
            client.adapter.post(f"/v1/sys/config/auditing/request-headers/{name}", json={"hmac": False})
        steps.append(Step(f"audited request header {name} (hmac=false)", changed))
    return steps


def _transit_key(client: hvac.Client, transit_mount: str, transit_key: str) -> Step:
    """The one key: aes256-gcm96, derived, not exportable, no plaintext backup, deletion not allowed."""
    what = f"transit key {transit_key} ({TRANSIT_KEY_TYPE}, derived, not exportable, deletion not allowed)"
    try:
        key = client.secrets.transit.read_key(name=transit_key, mount_point=transit_mount)["data"]
    except hvac.exceptions.InvalidPath:
        client.adapter.post(
            f"/v1/{transit_mount}/keys/{transit_key}",
            json={"type": TRANSIT_KEY_TYPE, "derived": True, "exportable": False, "allow_plaintext_backup": False},
        )
        client.adapter.post(f"/v1/{transit_mount}/keys/{transit_key}/config", json={"deletion_allowed": False})
        return Step(what, True)
    if not key.get("derived") or key.get("type") != TRANSIT_KEY_TYPE:
        raise BootstrapError(
            f"transit key {transit_key} exists as {key.get('type')} derived={key.get('derived')}; "
            f"the service needs a derived {TRANSIT_KEY_TYPE} key (choose another CREDENTIALS_TRANSIT_KEY)"
        )
    if key.get("exportable") or key.get("allow_plaintext_backup"):
        # Both are one-way switches in Vault: the key material may already have left; only a new key helps.
        raise BootstrapError(
            f"transit key {transit_key} is exportable or allows plaintext backup, which cannot be undone; "
            "create a new key, rewrap every ciphertext with it, and point CREDENTIALS_TRANSIT_KEY at it"
        )
    if key.get("deletion_allowed"):
        client.adapter.post(f"/v1/{transit_mount}/keys/{transit_key}/config", json={"deletion_allowed": False})
        return Step(f"{what}: deletion_allowed reset to false", True)
    return Step(what, False)


def _policy(client: hvac.Client, name: str, policy: str) -> Step:
    try:
        current = client.sys.read_policy(name=name)["data"]["rules"]
    except hvac.exceptions.InvalidPath:
        current = None
    if current != policy:
        client.sys.create_or_update_policy(name=name, policy=policy)
    return Step(f"policy {name}", current != policy)


@translated
def ensure_approle(
    client: hvac.Client,
    *,
    approle_mount: str = "approle",
    role: str = SERVICE_ROLE,
    token_ttl: str | int = DEFAULT_TOKEN_TTL,
    token_max_ttl: str | int = DEFAULT_TOKEN_MAX_TTL,
    policies: tuple[str, ...] = (SERVICE_POLICY,),
    secret_id_ttl: str | int = 0,
    secret_id_cidrs: tuple[str, ...] = (),
) -> list[Step]:
    """The AppRole auth method and the service's role: its tokens carry only ``policies`` (no default policy),
    are renewable service tokens with ``token_ttl``, and must be replaced by a new login after ``token_max_ttl``.

    ``secret_id_ttl`` (0: none) makes every secret id issued from then on expire, so a leaked one stops working;
    ``secret_id_cidrs`` binds secret ids, and the tokens they log in to, to the service's network, so a leaked one
    is useless elsewhere."""
    steps: list[Step] = []
    methods = client.sys.list_auth_methods()["data"]
    method = methods.get(f"{approle_mount}/")
    if method is None:
        client.sys.enable_auth_method("approle", path=approle_mount, description="credentials service login")
        steps.append(Step(f"AppRole auth method at auth/{approle_mount}/", True))
    elif method.get("type") != "approle":
        raise BootstrapError(f"auth/{approle_mount}/ is mounted but is not AppRole")
    else:
        steps.append(Step(f"AppRole auth method at auth/{approle_mount}/", False))

    ttl, max_ttl = seconds(token_ttl), seconds(token_max_ttl)
    if not 0 < ttl <= max_ttl:
        raise BootstrapError(f"token TTL {token_ttl} must be positive and at most the max TTL {token_max_ttl}")
    wanted: dict[str, Any] = {
        "bind_secret_id": True,
        "token_policies": sorted(policies),
        "token_no_default_policy": True,
        "token_type": "service",
        "token_ttl": ttl,
        "token_max_ttl": max_ttl,
        "token_num_uses": 0,
        "secret_id_ttl": seconds(secret_id_ttl),
        "secret_id_bound_cidrs": _networks(secret_id_cidrs),
        "token_bound_cidrs": _networks(secret_id_cidrs),
    }
    try:
        current = client.adapter.get(f"/v1/auth/{approle_mount}/role/{role}")["data"]
    except hvac.exceptions.InvalidPath:
        current = None
    if current is not None:
        current = {key: current.get(key) for key in wanted}
        current["token_policies"] = sorted(current["token_policies"] or [])
        for cidrs in ("secret_id_bound_cidrs", "token_bound_cidrs"):
            current[cidrs] = _networks(current[cidrs] or ())
    changed = current != wanted
    if changed:
        client.adapter.post(f"/v1/auth/{approle_mount}/role/{role}", json=wanted)
    steps.append(
        Step(
            f"AppRole role {role} (policies {', '.join(policies)}; token TTL {ttl}s, max {max_ttl}s; secret id TTL "
            f"{seconds(secret_id_ttl) or 'none'}, bound to {', '.join(secret_id_cidrs) or 'any address'})",
            changed,
        )
    )
    return steps


@translated
def _networks(cidrs: Iterable[str]) -> list[str]:
    """CIDRs as Vault compares them (it stores a /32 as a bare address): sorted, each with its prefix length."""
    return sorted(str(ipaddress.ip_network(cidr, strict=False)) for cidr in cidrs)


def issue_secret_id(
    client: hvac.Client, *, approle_mount: str = "approle", role: str = SERVICE_ROLE
) -> tuple[str, str]:
    """The role's role id and a new secret id for it."""
    role_id = client.adapter.get(f"/v1/auth/{approle_mount}/role/{role}/role-id")["data"]["role_id"]
    secret_id = client.adapter.post(f"/v1/auth/{approle_mount}/role/{role}/secret-id", json={})["data"]["secret_id"]
    return str(role_id), str(secret_id)


@translated
def write_approle_credentials(
    client: hvac.Client,
    out_dir: Path,
    *,
    approle_mount: str = "approle",
    role: str = SERVICE_ROLE,
    new_secret_id: bool = False,
) -> list[Step]:
    """``out_dir/role_id`` and ``out_dir/secret_id`` (mode 0600) for the service's ``VAULT_ROLE_ID_FILE`` and
    ``VAULT_SECRET_ID_FILE``. A secret id already there is kept while Vault still accepts it, unless
    ``new_secret_id``; the previous one is not destroyed here (the service may still need it to log in)."""
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    role_id = str(client.adapter.get(f"/v1/auth/{approle_mount}/role/{role}/role-id")["data"]["role_id"])
    steps = [Step(f"role id in {out_dir / 'role_id'}", _write_secret_file(out_dir / "role_id", role_id))]

    secret_file = out_dir / "secret_id"
    existing = secret_file.read_text().strip() if secret_file.exists() else ""
    if existing and not new_secret_id and _secret_id_is_live(client, approle_mount, role, existing):
        steps.append(Step(f"secret id in {secret_file} (still valid)", False))
        return steps
    issued = client.adapter.post(f"/v1/auth/{approle_mount}/role/{role}/secret-id", json={})["data"]
    _write_secret_file(secret_file, str(issued["secret_id"]))
    steps.append(Step(f"secret id in {secret_file} (accessor {issued['secret_id_accessor']})", True))
    return steps


@translated
def revoke_own_token(client: hvac.Client) -> None:
    """Revoke the token ``client`` holds (``auth/token/revoke-self``): the operator's root token, once the bootstrap
    it was needed for has succeeded. What it set up stays: the service's AppRole tokens are not its children."""
    client.adapter.post("/v1/auth/token/revoke-self")


@translated
def check_approle_login(client: hvac.Client, role_id: str, secret_id: str, *, approle_mount: str = "approle") -> None:
    """Log in with ``role_id`` and ``secret_id`` as the service does; raises the ``VaultError`` of a refused login
    (an expired or unknown secret id answers 400). The token is left to expire at the role's TTL: its policy has no
    ``auth/token/revoke-self`` (the role's tokens carry no default policy)."""
    client.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=approle_mount, use_token=False)


def _secret_id_is_live(client: hvac.Client, approle_mount: str, role: str, secret_id: str) -> bool:
    found = client.adapter.post(f"/v1/auth/{approle_mount}/role/{role}/secret-id/lookup", json={"secret_id": secret_id})
    # A known secret id answers 200 with its data; an unknown one answers 204 (hvac hands back the Response).
    return isinstance(found, dict) and bool(found.get("data"))


def _write_secret_file(path: Path, value: str) -> bool:
    """Write ``value`` to ``path`` (mode 0600, replaced atomically); False when it already held exactly that."""
    if path.exists() and path.read_text().strip() == value:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    tmp.replace(path)
    return True


@translated
def check_audit_device(client: hvac.Client, *, enable_file: str | None = None) -> Step:
    """Check that at least one audit device is on; without one, nothing the service does would be traceable.

    On HashiCorp Vault, ``enable_file`` enables a file device at ``file/`` through the API. OpenBao refuses that
    (unless its server config sets ``unsafe_allow_api_audit_creation``): there the device is declared in the server's
    config file, so this only checks and, if none is on, says how to declare one.
    """
    devices: dict[str, Any] = client.adapter.get("/v1/sys/audit").get("data") or {}
    if devices:
        names = ", ".join(f"{path} ({device.get('type')})" for path, device in sorted(devices.items()))
        return Step(f"audit device enabled: {names}", False)
    refused = _api_audit_creation_refused(client)
    if enable_file is None:
        if refused:
            raise BootstrapError(f"no audit device is enabled. {_OPENBAO_DECLARATIVE}")
        raise BootstrapError(
            "no audit device is enabled: run again with --enable-file-audit PATH (HashiCorp Vault allows enabling "
            "one through the API), or enable one yourself (vault audit enable file file_path=PATH)"
        )
    try:
        client.sys.enable_audit_device("file", path="file", options={"file_path": enable_file, "mode": "0600"})
    except hvac.exceptions.InvalidRequest as exc:
        if refused or "declarative" in str(exc):
            raise BootstrapError(f"no audit device is enabled. {_OPENBAO_DECLARATIVE}") from exc
        raise
    return Step(f"audit device file/ (file, {enable_file})", True)


def _api_audit_creation_refused(client: hvac.Client) -> bool:
    """True on OpenBao without ``unsafe_allow_api_audit_creation`` (its sanitized server config names the setting;
    HashiCorp Vault has no such setting and allows it)."""
    try:
        config = client.adapter.get("/v1/sys/config/state/sanitized")["data"]
    except hvac.exceptions.VaultError:
        return False
    return "unsafe_allow_api_audit_creation" in config and not config["unsafe_allow_api_audit_creation"]
