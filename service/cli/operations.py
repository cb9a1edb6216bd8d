"""Running it: ``credctl serve``, and the maintenance commands an operator (or cron) runs against a live stack."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import click

from service.cli.base import config_errors, fail, main
from service.cli.settings_help import environment_help
from service.config import Settings
from service.services import Services

if TYPE_CHECKING:
    from service.maintenance.refresh_due import RefreshReport
    from service.proxy.check import CheckReport

T = TypeVar("T")


def _settings() -> Settings:
    with config_errors():
        return Settings.from_env()


def _with_services(work: Callable[[Services], Awaitable[T]]) -> T:
    """Run ``work`` with the services a one-off command needs (small pools), as the app builds them."""
    settings = _settings()

    async def run() -> T:
        async with Services.from_settings(settings, one_off=True) as services:
            return await work(services)

    return asyncio.run(run())


@main.command(epilog=environment_help())
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: every interface)")
@click.option("--port", default=8000, show_default=True, type=int, help="port to listen on")
@click.option("--workers", default=None, type=int, help="uvicorn worker processes [default: CREDENTIALS_WORKERS, 1]")
def serve(host: str, port: int, workers: int | None) -> None:
    """Serve the API against the configured Vault and Postgres."""
    import uvicorn

    from service.server import server_options
    from service.telemetry.logs import logging_config

    settings = _settings()  # fail here, with the setting's name, rather than inside a worker
    logging_config(settings.log_level, settings.log_format).configure()  # the preflight's lines, formatted as the app's

    async def preflight() -> None:
        # Postgres and Vault are tried once here (one connection, one token check), so that a dead or misconfigured
        # one ends `serve` with one line (StartupError) rather than with the traceback uvicorn prints for a failed
        # lifespan.
        from db.database import check_connection
        from service.services import open_secret_store
        from service.startup import database_errors

        with database_errors(settings.database):
            await check_connection(settings.database.url, settings.database.connect_timeout)
        async with open_secret_store(settings, workers=1):
            pass

    asyncio.run(preflight())
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers or settings.http.workers,
        **server_options(settings),
    )


@main.command()
def purge() -> None:
    """Destroy the secrets of deleted credentials past the retention window (CREDENTIALS_DELETE_RETENTION)."""
    from service.maintenance.purge import purge as run

    purged = _with_services(lambda services: run(services.credentials))
    click.echo(f"purged {purged} deleted credential(s) past the retention window")


@main.command("refresh-due")
@click.option("--window", type=int, default=None, help="seconds ahead [default: CREDENTIALS_OAUTH_PROACTIVE_WINDOW]")
@click.option("--spread", type=float, default=0.0, show_default=True, help="spread refreshes over this many seconds")
def refresh_due(window: int | None, spread: float) -> None:
    """Refresh the OAuth tokens that expire within the window, once (for cron when the service's own background
    refresh is off). Exits 1 when a refresh failed."""
    from service.maintenance.refresh_due import refresh_due as run

    async def work(services: Services) -> RefreshReport:
        seconds = services.settings.oauth.proactive_window_seconds if window is None else window
        return await run(services.credentials, timedelta(seconds=seconds), spread)

    _print_report(_with_services(work))


@main.command("rotate-key")
@click.option("--no-rotate", is_flag=True, help="only finish rewrapping (resume an interrupted run)")
@click.option("--min-decryption-version", is_flag=True, help="afterwards, refuse ciphertexts of older key versions")
@click.option(
    "--batch-size", default=100, show_default=True, type=click.IntRange(1, 200), help="secrets rewrapped per Vault call"
)
def rotate_key(no_rotate: bool, min_decryption_version: bool, batch_size: int) -> None:
    """Rotate the transit key and rewrap every stored secret to the new version, while the API keeps serving.

    Needs an operator VAULT_TOKEN (transit key rotation is outside the service's policy).
    """
    from rich.progress import Progress

    from service.maintenance.rotation import rewrap_all
    from vault import keys
    from vault.client import make_client
    from vault.errors import VaultError

    vault = _settings().vault
    admin = make_client(vault.addr, vault.token or "", pool_size=1, timeout=vault.timeout, cacert=vault.cacert)
    mount, key = vault.transit_mount, vault.transit_key
    try:
        latest = keys.latest_version(admin, mount, key) if no_rotate else keys.rotate(admin, mount, key)
    except VaultError as exc:
        fail(f"cannot rotate {mount}/keys/{key}: {exc}")
    click.echo(f"{'resuming at' if no_rotate else 'rotated to'} {mount}/keys/{key} v{latest}; rewrapping ...")

    async def work(services: Services) -> None:
        with Progress(transient=True) as progress:
            task = progress.add_task("rewrapping", total=None)
            report = await rewrap_all(
                services.store,
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
                fail("not raising min_decryption_version: some credentials were skipped; run again with --no-rotate")
            keys.set_min_decryption_version(admin, mount, key, latest)
            click.echo(f"min_decryption_version is now {latest}: older key versions can no longer decrypt")

    _with_services(work)


@main.command()
@click.option("--apply", is_flag=True, help="repair; without it, only report what would be done")
@click.option("--older-than", default=300, show_default=True, type=int, help="seconds before a write counts as stuck")
def reconcile(apply: bool, older_than: int) -> None:
    """Find and repair what a crash between Postgres and Vault left behind (dry run by default)."""
    from service.maintenance.reconcile import reconcile as run

    report = _with_services(lambda services: run(services.store, apply=apply, grace=timedelta(seconds=older_than)))
    for line in report.actions:
        click.echo(line)
    for line in report.problems:
        click.echo(f"problem: {line}", err=True)
    if not report.actions:
        click.echo("nothing to repair")
    elif not apply:
        click.echo("dry run: run again with --apply to repair")


@main.command("check")
@click.option("--due", is_flag=True, required=True, help="check every credential whose last check is too old")
@click.option("--older-than", type=int, default=None, help="seconds [default: CREDENTIALS_CHECK_INTERVAL, or 1 day]")
def check(due: bool, older_than: int | None) -> None:
    """Run the provider checks that are due (credentials with proxy.check settings), once; for cron when the
    service's own check job is off. Exits 1 when a check could not run."""
    from service.proxy.check import check_due

    async def work(services: Services) -> CheckReport:
        seconds = older_than if older_than is not None else (services.settings.proxy.check_interval_seconds or 86_400)
        return await check_due(services.checks, timedelta(seconds=seconds))

    _print_report(_with_services(work))


def _print_report(report: RefreshReport | CheckReport) -> None:
    """A job's summary on stdout, each failure on stderr; exit status 1 when any failed."""
    click.echo(report.summary())
    for line in report.failed:
        click.echo(f"failed {line}", err=True)
    if report.failed:
        sys.exit(1)
