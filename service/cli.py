"""``credctl``: run, migrate, bootstrap and administer the credentials service."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
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
@click.option("--permissions", default="read,write,reveal", show_default=True, help="comma-separated")
@click.option("--label", default=None)
def api_key_create(workspace: str, permissions: str, label: str | None) -> None:
    """Create a key and print it (and nothing else) on stdout; it is not shown again."""
    from db.engine import bind
    from service.auth import create_api_key

    with _config_errors():
        url = database_url_from_env()

    async def create() -> str:
        bind(url)
        new = await create_api_key(workspace, [p.strip() for p in permissions.split(",") if p.strip()], label)
        return new.key

    try:
        key = asyncio.run(create())
    except ValueError as exc:
        _fail(str(exc))
    click.echo(key)


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
    from vault.store import SecretStore

    store = SecretStore.connect(
        settings.vault_addr,
        settings.vault_token or "",
        workers=8,
        timeout=settings.vault_timeout,
        transit_mount=settings.transit_mount,
        transit_key=settings.transit_key,
        kv_mount=settings.kv_mount,
    )
    try:
        async with connection_pool(settings.database_url, min_size=1, max_size=8):
            yield store
    finally:
        store.close()


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
