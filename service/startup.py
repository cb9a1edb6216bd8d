"""Start-up failures as one line: what could not be used, which setting names it, and what to do.

A refused, missing, silent or misconfigured Postgres or Vault raises deep inside asyncpg, Piccolo or hvac, with a
traceback an operator has no use for. ``database_failure`` and ``vault_failure`` turn those errors into a
``StartupError`` whose message names the variable (``DATABASE_URL``, ``VAULT_ADDR``, ``VAULT_TOKEN``, ...), the host,
and the fix; ``credctl`` prints that message alone and exits 1. Passwords and tokens are never part of the message.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import asyncpg

from service.config import DatabaseSettings, VaultSettings
from vault.errors import (
    SecretNotFound,
    VaultError,
    VaultLoginFailed,
    VaultPermissionDenied,
    VaultRequestRejected,
    VaultTlsRefused,
    VaultUnavailable,
)


class StartupError(RuntimeError):
    """A backend named by a setting cannot be used; the message is the one line an operator reads."""


def describe_database(url: str) -> str:
    """``user@host:port/db`` of a DSN, without its password."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{user}{parts.hostname or 'localhost'}{port}{parts.path or '/'}"


def database_failure(exc: BaseException, settings: DatabaseSettings) -> StartupError | None:
    """The one line for a failure to open ``settings``' database, or None if ``exc`` is not such a failure."""
    where = describe_database(settings.url)
    parts = urlsplit(settings.url)
    host = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    database = parts.path.lstrip("/") or parts.username or "postgres"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StartupError(
            f"DATABASE_URL ({where}): database {database!r} does not exist on {host}; create it "
            f"(createdb {database}) or fix DATABASE_URL"
        )
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return StartupError(
            f"DATABASE_URL ({where}): Postgres on {host} refused the login ({exc}); fix the user or password in "
            "DATABASE_URL"
        )
    if isinstance(exc, TimeoutError):
        return StartupError(
            f"DATABASE_URL ({where}): Postgres on {host} did not answer within {settings.connect_timeout:g}s "
            "(CREDENTIALS_DB_CONNECT_TIMEOUT); check that the host and port are Postgres and that it is not overloaded"
        )
    if isinstance(exc, socket.gaierror):
        return StartupError(f"DATABASE_URL ({where}): cannot resolve host {parts.hostname!r}; fix the host")
    if isinstance(exc, ConnectionRefusedError):
        return StartupError(
            f"DATABASE_URL ({where}): connection refused by {host}; start Postgres or fix the host and port"
        )
    if isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        return StartupError(
            f"DATABASE_URL ({where}): cannot connect to Postgres on {host} ({type(exc).__name__}: {exc}); check that "
            "Postgres runs there"
        )
    if isinstance(exc, asyncpg.PostgresError):
        return StartupError(f"DATABASE_URL ({where}): Postgres refused the start-up: {exc}")
    return None


def vault_failure(exc: BaseException, settings: VaultSettings) -> StartupError | None:
    """The one line for a failure to reach or log in to Vault, or None if ``exc`` is not such a failure."""
    addr = f"VAULT_ADDR={settings.addr}"
    if isinstance(exc, VaultLoginFailed):
        return StartupError(f"VAULT_ROLE_ID/VAULT_SECRET_ID (AppRole login at {settings.addr}): {exc}")
    if isinstance(exc, VaultPermissionDenied):
        what = "the AppRole token" if settings.uses_approle else "VAULT_TOKEN"
        return StartupError(
            f"{what} was refused by Vault at {settings.addr} (expired, revoked or wrong); give the service a valid "
            "token, or AppRole credentials (VAULT_ROLE_ID, VAULT_SECRET_ID)"
        )
    if isinstance(exc, VaultTlsRefused):
        reason = str(exc).removeprefix("TLS with Vault failed: ")
        if settings.cacert:
            return StartupError(
                f"{addr}: Vault's TLS certificate was refused ({reason}) with VAULT_CACERT={settings.cacert}; set "
                "VAULT_CACERT to the CA that signed it, or fix the host in VAULT_ADDR to one its certificate names"
            )
        return StartupError(
            f"{addr}: Vault's TLS certificate was refused ({reason}) by the system's trust store; set VAULT_CACERT "
            "to the PEM file of the CA that signed it, or fix the host in VAULT_ADDR to one its certificate names"
        )
    if isinstance(exc, VaultUnavailable):
        reason = str(exc).removeprefix("cannot reach Vault: ")
        if "Timeout" in reason:
            return StartupError(
                f"{addr}: Vault did not answer within {settings.timeout:g}s (CREDENTIALS_VAULT_TIMEOUT); check that "
                "VAULT_ADDR is Vault or OpenBao and that it is not overloaded"
            )
        if "sealed" in reason.lower():
            return StartupError(f"{addr}: Vault is sealed; unseal it (bao operator unseal)")
        return StartupError(
            f"{addr}: cannot reach Vault ({reason.split(',')[0]}); start Vault or OpenBao, or fix VAULT_ADDR"
        )
    if isinstance(exc, SecretNotFound | VaultRequestRejected):
        return StartupError(
            f"{addr} does not answer as Vault does (token lookup: {type(exc).__name__}); fix VAULT_ADDR "
            "(scheme, host and port of Vault or OpenBao, without a path)"
        )
    if isinstance(exc, VaultError):
        return StartupError(f"{addr}: Vault refused the start-up: {exc}")
    return None


def _unwrap(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio and asyncpg's pool raise groups), else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@contextmanager
def database_errors(settings: DatabaseSettings) -> Iterator[None]:
    """Re-raise a failure to open the database as a ``StartupError``."""
    try:
        yield
    except StartupError:
        raise
    except Exception as exc:
        failure = database_failure(_unwrap(exc), settings)
        if failure is None:
            raise
        raise failure from None


@contextmanager
def vault_errors(settings: VaultSettings) -> Iterator[None]:
    """Re-raise a failure to reach or log in to Vault as a ``StartupError``."""
    try:
        yield
    except StartupError:
        raise
    except Exception as exc:
        failure = vault_failure(_unwrap(exc), settings)
        if failure is None:
            raise
        raise failure from None
