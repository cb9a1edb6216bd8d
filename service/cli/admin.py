"""Setting up: ``credctl migrate``, ``credctl vault-bootstrap``, ``credctl api-key create|revoke``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click

from service.cli.base import config_errors, fail, main
from service.config import DatabaseSettings, LifecycleSettings, VaultSettings

T = TypeVar("T")


@main.command()
def migrate() -> None:
    """Apply the database migrations (DATABASE_URL)."""
    from db.database import migrate as run_migrations
    from service.startup import database_errors

    with config_errors():
        database = DatabaseSettings.from_env()
    with database_errors(database):
        click.echo(asyncio.run(run_migrations(database.url, database.connect_timeout)))


@main.command("vault-bootstrap")
@click.option(
    "--approle-out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="write the service's role_id and secret_id files here (mode 0600) for VAULT_ROLE_ID_FILE and "
    "VAULT_SECRET_ID_FILE; a secret id already there is kept while Vault accepts it",
)
@click.option("--new-secret-id", is_flag=True, help="with --approle-out: issue a new secret id even if one is valid")
@click.option("--token-ttl", default="1h", show_default=True, help="TTL of the service's tokens (renewed at 2/3)")
@click.option(
    "--token-max-ttl", default="4h", show_default=True, help="max TTL of the service's tokens (then it logs in again)"
)
@click.option(
    "--secret-id-ttl",
    default="0",
    show_default=True,
    help="lifetime of each AppRole secret id issued from now on (e.g. 720h; 0: no expiry); issue a new one before "
    "it ends (--approle-out DIR --new-secret-id)",
)
@click.option(
    "--secret-id-cidr",
    "secret_id_cidrs",
    multiple=True,
    metavar="CIDR",
    help="only logins from this network may use the secret ids and their tokens (repeatable; e.g. 172.28.0.0/24)",
)
@click.option(
    "--enable-file-audit",
    "audit_file",
    default=None,
    metavar="PATH",
    help="HashiCorp Vault only: enable a file audit device writing PATH if none is on (OpenBao refuses this; "
    "declare the device in its server config)",
)
@click.option(
    "--revoke-token",
    is_flag=True,
    help="once every step succeeded, revoke the operator token it was given (auth/token/revoke-self); a later run "
    "without VAULT_TOKEN keeps what was set up when the --approle-out files still log in",
)
def vault_bootstrap(
    approle_out: Path | None,
    new_secret_id: bool,
    token_ttl: str,
    token_max_ttl: str,
    secret_id_ttl: str,
    secret_id_cidrs: tuple[str, ...],
    audit_file: str | None,
    revoke_token: bool,
) -> None:
    """Mounts, transit key, policies, AppRole, audited headers and the audit device check in Vault (VAULT_ADDR,
    an operator's VAULT_TOKEN); safe to re-run: a second run changes nothing and says so."""
    from vault.bootstrap import (
        BootstrapError,
        bootstrap,
        check_audit_device,
        revoke_own_token,
        write_approle_credentials,
    )
    from vault.client import make_client
    from vault.errors import VaultError

    if new_secret_id and approle_out is None:
        fail("--new-secret-id needs --approle-out DIR (where the new secret id is written)")
    if not VaultSettings.token_in_env():
        _without_operator_token(approle_out, new_secret_id)
        return
    with config_errors():
        vault = VaultSettings.from_env()
        max_versions = LifecycleSettings.from_env().max_versions  # the KV mount's config, written here
    if not vault.token:
        fail("vault-bootstrap needs VAULT_ADDR and an operator's VAULT_TOKEN")
    client = make_client(vault.addr, vault.token, pool_size=1, timeout=10, cacert=vault.cacert)
    steps = []
    try:
        steps += bootstrap(
            client,
            transit_mount=vault.transit_mount,
            transit_key=vault.transit_key,
            kv_mount=vault.kv_mount,
            token_ttl=token_ttl,
            token_max_ttl=token_max_ttl,
            max_versions=max_versions,
            secret_id_ttl=secret_id_ttl,
            secret_id_cidrs=secret_id_cidrs,
        )
        if approle_out is not None:
            steps += write_approle_credentials(client, approle_out, new_secret_id=new_secret_id)
        steps.append(check_audit_device(client, enable_file=audit_file))
        if revoke_token:
            revoke_own_token(client)
    except (VaultError, BootstrapError, ValueError) as exc:
        for step in steps:
            click.echo(str(step))
        fail(f"bootstrap failed: {exc}")
    for step in steps:
        click.echo(str(step))
    changed = sum(step.changed for step in steps)
    click.echo(f"{changed} change(s)" if changed else "nothing to change: Vault was already bootstrapped")
    if revoke_token:
        click.echo("revoked the operator token it was given (auth/token/revoke-self)")


_NEW_ROOT = 'make a new root token from the unseal or recovery key (README: "Root token")'


def _without_operator_token(approle_out: Path | None, new_secret_id: bool) -> None:
    """``vault-bootstrap`` without VAULT_TOKEN, as compose's bootstrap job runs once the root token is revoked: one
    line, and status 0 only when an earlier bootstrap's AppRole files (``approle_out``) still log in."""
    from vault.bootstrap import check_approle_login
    from vault.client import make_client
    from vault.errors import VaultError

    done = approle_out is not None and all((approle_out / name).is_file() for name in ("role_id", "secret_id"))
    if approle_out is None or not done or new_secret_id:
        fail(f"vault-bootstrap needs an operator's token in VAULT_TOKEN; if the root token was revoked, {_NEW_ROOT}")
    with config_errors():
        vault = VaultSettings.with_approle_files(approle_out)
    client = make_client(vault.addr, "", pool_size=1, timeout=10)
    try:
        # Both set: with_approle_files refuses empty files (no token and no AppRole login to use).
        check_approle_login(client, vault.role_id or "", vault.secret_id or "", approle_mount=vault.approle_mount)
    except VaultError as exc:
        fail(
            f"no operator token (VAULT_TOKEN), and the service's AppRole login with {approle_out} fails "
            f"({' '.join(str(exc).split())}): "
            f"{_NEW_ROOT} and run vault-bootstrap with it to issue a new secret id"
        )
    finally:
        client.adapter.close()
    click.echo(
        f"skipped: no operator token (VAULT_TOKEN); the service's AppRole login with {approle_out} works, so what "
        f"the earlier bootstrap set up is kept. To run it again, {_NEW_ROOT}"
    )


@main.group("api-key")
def api_key() -> None:
    """Workspace API keys."""


@api_key.command("create")
@click.option("--workspace", required=True, help="workspace the key acts in")
@click.option(
    "--permissions",
    default="read,write,reveal",
    show_default=True,
    help="comma-separated: read, write, reveal, admin, use",
)
@click.option("--label", default=None, help="a name for people: what or who uses the key")
@click.option(
    "--expires-at",
    default=None,
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%d"]),
    help="when the key stops working: ISO 8601 with an offset (2027-01-31T12:00:00+00:00), or a date (UTC midnight)",
)
def api_key_create(workspace: str, permissions: str, label: str | None, expires_at: datetime | None) -> None:
    """Create a key and print it (and nothing else) on stdout; it is not shown again."""
    from service.auth import api_keys

    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    wanted = [p.strip() for p in permissions.split(",") if p.strip()]
    try:
        new = _with_database(lambda: api_keys.create(workspace, wanted, label, expires_at=expires_at))
    except ValueError as exc:
        fail(str(exc))
    click.echo(new.key)


@api_key.command("list")
@click.option("--workspace", required=True, help="the workspace whose keys to list")
def api_key_list(workspace: str) -> None:
    """List a workspace's keys that are not revoked, newest first: id, prefix, status, permissions, expiry, label
    (tab-separated, one per line, after a header). The secrets are not stored, so none is shown."""
    from service.auth import api_keys

    try:
        rows = _with_database(lambda: api_keys.list_keys(workspace))
    except ValueError as exc:
        fail(str(exc))
    click.echo("\t".join(("id", "key", "status", "permissions", "expires_at", "label")))
    for row in rows:
        expires = row["expires_at"].isoformat() if row["expires_at"] else "-"
        fields = (str(row["id"]), api_keys.public_prefix(row["lookup_id"]), row["status"])
        click.echo("\t".join((*fields, ",".join(row["permissions"]), expires, row["label"] or "-")))


@api_key.command("revoke")
@click.argument("key_id")
def api_key_revoke(key_id: str) -> None:
    """Revoke the key with id KEY_ID (its row id, as `created_by` and the API show it) at once."""
    from service.auth import api_keys

    if _with_database(lambda: api_keys.revoke(key_id)) is None:
        fail(f"no active or inactive API key with id {key_id!r}")
    click.echo(f"revoked {key_id}")


def _with_database(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` against DATABASE_URL (a connection per query, no pool: one or two queries are all it makes)."""
    from db.database import bind, check_connection
    from service.startup import database_errors

    with config_errors():
        database = DatabaseSettings.from_env()

    async def run() -> T:
        with database_errors(database):
            await check_connection(database.url, database.connect_timeout)
            await asyncio.to_thread(bind, database.url, database.connect_timeout)
        return await work()

    return asyncio.run(run())
