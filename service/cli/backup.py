"""Backing up and restoring: ``credctl backup`` and ``credctl restore`` (the database and OpenBao as a pair)."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.base import config_errors, fail, main
from service.config import DatabaseSettings, VaultSettings


def _backends() -> tuple[str, VaultSettings]:
    with config_errors():
        database, vault = DatabaseSettings.from_env(), VaultSettings.from_env()
    if not vault.token:
        fail("backup and restore need VAULT_ADDR and an operator's VAULT_TOKEN (sudo on sys/storage/raft/snapshot)")
    return database.url, vault


@main.command()
@click.option(
    "--out",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="a new (or empty) directory for postgres.dump, openbao.snap and manifest.json",
)
def backup(directory: Path) -> None:
    """Back up the metadata (pg_dump of DATABASE_URL) and then the secrets (OpenBao's raft snapshot, with an
    operator's VAULT_TOKEN), with a manifest of sizes and checksums. OpenBao must use raft storage."""
    from service.maintenance import backup as backups

    database_url, vault = _backends()
    try:
        report = backups.backup(
            directory,
            database_url=database_url,
            vault_addr=vault.addr,
            vault_token=vault.token or "",
            vault_cacert=vault.cacert,
        )
    except backups.BackupError as exc:
        fail(f"backup failed: {exc}")
    click.echo(report.summary("backed up into"))


@main.command()
@click.option(
    "--from",
    "directory",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a directory `credctl backup` wrote",
)
def restore(directory: Path) -> None:
    """Restore a backup into an empty stack: a database without tables (DATABASE_URL) and a new OpenBao with raft
    storage (VAULT_ADDR, its root VAULT_TOKEN). Afterwards OpenBao answers to the BACKED-UP cluster's unseal keys
    and tokens; give the service a secret id issued by it (or its token)."""
    from service.maintenance import backup as backups

    database_url, vault = _backends()
    try:
        report = backups.restore(
            directory,
            database_url=database_url,
            vault_addr=vault.addr,
            vault_token=vault.token or "",
            vault_cacert=vault.cacert,
        )
    except backups.BackupError as exc:
        fail(f"restore failed: {exc}")
    click.echo(report.summary("restored from"))
    if report.sealed:
        click.echo(
            "OpenBao is sealed now: unseal it with the BACKED-UP cluster's unseal keys (bao operator unseal), or "
            "start it with that cluster's auto-unseal key; then its tokens and AppRole secret ids work again"
        )
