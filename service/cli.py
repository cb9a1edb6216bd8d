"""``credctl``: run, migrate, bootstrap and administer the credentials service."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

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
def vault_bootstrap() -> None:
    """Mounts, transit key, policy and audited headers in Vault (VAULT_ADDR, VAULT_TOKEN); safe to re-run."""
    from vault.bootstrap import bootstrap
    from vault.client import make_client
    from vault.errors import VaultError

    with _config_errors():
        addr, token = vault_admin_from_env()
        names = engine_names_from_env()
    try:
        steps = bootstrap(make_client(addr, token, pool_size=1, timeout=10), **names)
    except VaultError as exc:
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
@click.option("--apply", is_flag=True, help="repair; without it, only report what would be done")
@click.option("--older-than", default=300, show_default=True, type=int, help="seconds before a write counts as stuck")
def reconcile(apply: bool, older_than: int) -> None:
    """Find and repair what a crash between Postgres and Vault left behind (dry run by default)."""
    from db.engine import bind
    from service.reconcile import reconcile as run
    from vault.store import SecretStore

    with _config_errors():
        settings = Settings.from_env()

    async def go() -> None:
        engine = bind(settings.database_url)
        await engine.start_connection_pool(min_size=1, max_size=4)
        store = SecretStore.connect(
            settings.vault_addr,
            settings.vault_token or "",
            workers=4,
            timeout=settings.vault_timeout,
            transit_mount=settings.transit_mount,
            transit_key=settings.transit_key,
            kv_mount=settings.kv_mount,
        )
        try:
            report = await run(store, apply=apply, grace=timedelta(seconds=older_than))
        finally:
            store.close()
            await engine.close_connection_pool()
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


if __name__ == "__main__":  # pragma: no cover
    main()
