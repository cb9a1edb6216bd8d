"""``credctl``: run, migrate, bootstrap and administer the credentials service."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from vault.store import SecretStore

from service.config import (
    ConfigError,
    Settings,
    database_url_from_env,
    engine_names_from_env,
    vault_admin_from_env,
)


def _fail(message: str) -> None:
    click.echo(f"credctl: {message}", err=True)
    sys.exit(2)


@contextlib.contextmanager
def _config_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        _fail(str(exc))


@click.group()
def main() -> None:
    """The credentials service: secrets in Vault, metadata in Postgres, Mielto's Credentials API."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn worker processes")
def serve(host: str, port: int, workers: int) -> None:
    """Serve the API against the configured Vault and Postgres."""
    import uvicorn

    with _config_errors():
        Settings.from_env()  # fail here, with the setting's name, rather than inside a worker
    uvicorn.run("service.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info")


@main.command()
def migrate() -> None:
    """Apply the database migrations (DATABASE_URL)."""
    from db.engine import migrate as run_migrations

    with _config_errors():
        url = database_url_from_env()
    asyncio.run(run_migrations(url))


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
    "--enable-file-audit",
    "audit_file",
    default=None,
    metavar="PATH",
    help="HashiCorp Vault only: enable a file audit device writing PATH if none is on (OpenBao refuses this; "
    "declare the device in its server config)",
)
def vault_bootstrap(
    approle_out: Path | None, new_secret_id: bool, token_ttl: str, token_max_ttl: str, audit_file: str | None
) -> None:
    """Mounts, transit key, policies, AppRole, audited headers and the audit device check in Vault (VAULT_ADDR,
    an operator's VAULT_TOKEN); safe to re-run: a second run changes nothing and says so."""
    from vault.bootstrap import BootstrapError, bootstrap, check_audit_device, write_approle_credentials
    from vault.client import make_client
    from vault.errors import VaultError

    if new_secret_id and approle_out is None:
        _fail("--new-secret-id needs --approle-out DIR (where the new secret id is written)")
    with _config_errors():
        addr, token = vault_admin_from_env()
        names = engine_names_from_env()
    client = make_client(addr, token, pool_size=1, timeout=10)
    steps = []
    try:
        steps += bootstrap(client, **names, token_ttl=token_ttl, token_max_ttl=token_max_ttl)
        if approle_out is not None:
            steps += write_approle_credentials(client, approle_out, new_secret_id=new_secret_id)
        steps.append(check_audit_device(client, enable_file=audit_file))
    except (VaultError, BootstrapError, ValueError) as exc:
        for step in steps:
            click.echo(str(step))
        _fail(f"bootstrap failed: {exc}")
    for step in steps:
        click.echo(str(step))
    changed = sum(step.changed for step in steps)
    click.echo(f"{changed} change(s)" if changed else "nothing to change: Vault was already bootstrapped")


@main.group("api-key")
def api_key() -> None:
    """Workspace API keys."""


@api_key.command("create")
@click.option("--workspace", required=True, help="workspace the key acts in")
@click.option(
    "--permissions", default="read,write,reveal", show_default=True, help="comma-separated: read, write, reveal, admin"
)
@click.option("--label", default=None)
@click.option(
    "--expires-at",
    default=None,
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%d"]),
    help="when the key stops working: ISO 8601 with an offset (2027-01-31T12:00:00+00:00), or a date (UTC midnight)",
)
def api_key_create(workspace: str, permissions: str, label: str | None, expires_at: datetime | None) -> None:
    """Create a key and print it (and nothing else) on stdout; it is not shown again."""
    from db.engine import bind
    from service.auth import create_api_key

    with _config_errors():
        url = database_url_from_env()
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)

    async def create() -> str:
        bind(url)
        wanted = [p.strip() for p in permissions.split(",") if p.strip()]
        new = await create_api_key(workspace, wanted, label, expires_at=expires_at)
        return new.key

    try:
        key = asyncio.run(create())
    except ValueError as exc:
        _fail(str(exc))
    click.echo(key)


@api_key.command("revoke")
@click.argument("key_id")
def api_key_revoke(key_id: str) -> None:
    """Revoke the key with id KEY_ID (its row id, as `created_by` and the API show it) at once."""
    from db.engine import bind
    from service.auth import revoke_api_key

    with _config_errors():
        url = database_url_from_env()

    async def revoke() -> bool:
        bind(url)
        return await revoke_api_key(key_id) is not None

    if not asyncio.run(revoke()):
        _fail(f"no active or inactive API key with id {key_id!r}")
    click.echo(f"revoked {key_id}")


@main.command()
def purge() -> None:
    """Destroy the secrets of deleted credentials past the retention window (CREDENTIALS_DELETE_RETENTION)."""
    from service.credentials import CredentialService, Lifecycle

    with _config_errors():
        settings = Settings.from_env()

    async def go() -> int:
        async with _backends(settings) as store:
            service = CredentialService(
                store,
                Lifecycle(
                    max_versions=settings.max_versions,
                    delete_retention=timedelta(seconds=settings.delete_retention_seconds),
                ),
            )
            return await service.purge()

    click.echo(f"purged {asyncio.run(go())} deleted credential(s) past the retention window")


@main.command("refresh-due")
@click.option("--window", type=int, default=None, help="seconds ahead [default: CREDENTIALS_OAUTH_PROACTIVE_WINDOW]")
@click.option("--spread", type=float, default=0.0, show_default=True, help="spread refreshes over this many seconds")
def refresh_due(window: int | None, spread: float) -> None:
    """Refresh the OAuth tokens that expire within the window, once (for cron when the service's own background
    refresh is off). Exits 1 when a refresh failed."""
    from service.credentials import CredentialService, Lifecycle
    from service.oauth import RefreshPolicy, TokenClient

    with _config_errors():
        settings = Settings.from_env()

    async def go() -> list[str]:
        async with _backends(settings) as store:
            oauth = TokenClient(RefreshPolicy.from_settings(settings))
            service = CredentialService(store, Lifecycle(max_versions=settings.max_versions), oauth)
            report = await service.refresh_due(None if window is None else timedelta(seconds=window), spread)
        click.echo(report.summary())
        return report.failed

    failed = asyncio.run(go())
    for line in failed:
        click.echo(f"failed {line}", err=True)
    if failed:
        sys.exit(1)


@main.command("rotate-key")
@click.option("--no-rotate", is_flag=True, help="only finish rewrapping (resume an interrupted run)")
@click.option("--min-decryption-version", is_flag=True, help="afterwards, refuse ciphertexts of older key versions")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1, 200))
def rotate_key(no_rotate: bool, min_decryption_version: bool, batch_size: int) -> None:
    """Rotate the transit key and rewrap every stored secret to the new version, while the API keeps serving.

    Needs an operator VAULT_TOKEN (transit key rotation is outside the service's policy).
    """
    from rich.progress import Progress

    from service.rotation import rewrap_all
    from vault import keys
    from vault.client import make_client
    from vault.errors import VaultError

    with _config_errors():
        settings = Settings.from_env()
    admin = make_client(settings.vault_addr, settings.vault_token or "", pool_size=1, timeout=settings.vault_timeout)
    mount, key = settings.transit_mount, settings.transit_key
    try:
        latest = keys.latest_version(admin, mount, key) if no_rotate else keys.rotate(admin, mount, key)
    except VaultError as exc:
        _fail(f"cannot rotate {mount}/keys/{key}: {exc}")
    click.echo(f"{'resuming at' if no_rotate else 'rotated to'} {mount}/keys/{key} v{latest}; rewrapping ...")

    async def go() -> None:
        async with _backends(settings) as store:
            with Progress(transient=True) as progress:
                task = progress.add_task("rewrapping", total=None)
                report = await rewrap_all(
                    store,
                    latest,
                    batch_size=batch_size,
                    on_total=lambda n: progress.update(task, total=n),
                    on_progress=lambda n: progress.advance(task, n),
                )
        click.echo(report.summary())
        for line in report.skipped:
            click.echo(f"skipped {line}", err=True)
        if min_decryption_version:
            if report.skipped:
                _fail("not raising min_decryption_version: some credentials were skipped; run again with --no-rotate")
            keys.set_min_decryption_version(admin, mount, key, latest)
            click.echo(f"min_decryption_version is now {latest}: older key versions can no longer decrypt")

    asyncio.run(go())


@contextlib.asynccontextmanager
async def _backends(settings: Settings) -> AsyncIterator[SecretStore]:
    """Postgres and Vault for a one-off command."""
    from db.engine import connection_pool
    from service.app import make_store

    store = make_store(settings, workers=8)
    try:
        await store.start()
        async with connection_pool(settings.database_url, min_size=1, max_size=8):
            yield store
    finally:
        store.close()


@main.command()
@click.option("--apply", is_flag=True, help="repair; without it, only report what would be done")
@click.option("--older-than", default=300, show_default=True, type=int, help="seconds before a write counts as stuck")
def reconcile(apply: bool, older_than: int) -> None:
    """Find and repair what a crash between Postgres and Vault left behind (dry run by default)."""
    from service.reconcile import reconcile as run

    with _config_errors():
        settings = Settings.from_env()

    async def go() -> None:
        async with _backends(settings) as store:
            report = await run(store, apply=apply, grace=timedelta(seconds=older_than))
        for line in report.actions:
            click.echo(line)
        for line in report.problems:
            click.echo(f"problem: {line}", err=True)
        if not report.actions:
            click.echo("nothing to repair")
        elif not apply:
            click.echo("dry run: run again with --apply to repair")

    asyncio.run(go())


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@main.command()
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--state-dir", default=".credctl", show_default=True, type=click.Path(path_type=Path))
@click.option("--database", default="credentials_dev", show_default=True, help="dev database (dropped on exit)")
def dev(port: int, state_dir: Path, database: str) -> None:
    """The whole stack on this machine: OpenBao, Postgres, bootstrap, migrations, the service on 127.0.0.1."""
    from service.devstack import run_dev_stack

    state_dir = state_dir.resolve()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C
    try:
        run_dev_stack(state_dir, port, database, echo=click.echo)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how this command is meant to end; everything was stopped on the way out
    except RuntimeError as exc:
        _fail(str(exc))


@main.command("dev-token")
@click.option("--workspace", required=True, help="the workspace the token lists")
@click.option("--role", default="owner", show_default=True, type=click.Choice(["owner", "admin", "member", "viewer"]))
@click.option(
    "--secret",
    required=True,
    envvar="CREDENTIALS_JWT_HS256_SECRET",
    help="the service's HS256 secret (`credctl dev` prints it; default: CREDENTIALS_JWT_HS256_SECRET)",
)
@click.option("--sub", default="dev-user", show_default=True, help="the user's id")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="seconds until it expires")
@click.option("--issuer", default=None, help="iss claim, for a service with CREDENTIALS_JWT_ISSUER")
@click.option("--audience", default=None, help="aud claim, for a service with CREDENTIALS_JWT_AUDIENCE")
def dev_token(
    workspace: str, role: str, secret: str, sub: str, ttl: int, issuer: str | None, audience: str | None
) -> None:
    """Print a user token (HS256 JWT) for trying the API as a user: `sub` holds `role` in `workspace`. For
    development: anyone with the secret can mint any user."""
    import jwt

    if len(secret.encode()) < 32:
        _fail("--secret must be at least 32 bytes, as the service requires of CREDENTIALS_JWT_HS256_SECRET")
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, object] = {
        "sub": sub,
        "iat": now,
        "exp": now + ttl,
        "workspaces": [{"id": workspace, "role": role}],
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    click.echo(jwt.encode(claims, secret, algorithm="HS256"))


if __name__ == "__main__":  # pragma: no cover
    main()
