"""Vault errors, translated from hvac and requests so that nothing above ``vault/`` sees either library.

    VaultError
    ├── VaultUnavailable       sealed, down, unreachable, timed out, 5xx: retry later (the API answers 503)
    │   └── VaultTlsRefused    TLS to Vault failed: its certificate is not trusted (VAULT_CACERT) or names another host
    ├── VaultPermissionDenied  403: the service's token is invalid or its policy lacks a path
    ├── VaultLoginFailed       AppRole login refused (secret id revoked, expired or used up; wrong role id)
    ├── SecretNotFound         404: no such path or version, or the version was destroyed
    ├── VersionConflict        KV check-and-set did not match the current version
    └── VaultRequestRejected   any other 4xx (a bug or a misconfiguration)

hvac messages carry the method and URL of the call; they are kept for logs only (``str(exc)``), never for clients.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import hvac.exceptions
import requests

from vault.nodes import Failure, classify_exception


class VaultError(Exception):
    """Base class of every error raised by ``vault/``."""


class VaultUnavailable(VaultError):
    """Vault cannot serve the call now: sealed, down, unreachable, overloaded or too slow."""


class VaultOutcomeUnknown(VaultUnavailable):
    """The call was sent and no answer came (the node died, the connection was reset, a read timed out): Vault may
    have carried it out. A caller undoing its own steps after a failure must not assume it did not happen."""


class VaultTlsRefused(VaultUnavailable):
    """The TLS handshake with Vault failed, most often because its certificate does not chain to the trusted CA
    (``VAULT_CACERT``, else the system's trust store) or does not name the host of ``VAULT_ADDR``."""


def tls_reason(exc: BaseException) -> str:
    """What OpenSSL said, from the ``ssl.SSLError`` somewhere inside ``exc`` (requests and aiohttp wrap it)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        # OpenSSL's own errors only: aiohttp's subclass them without their attributes, and keep the original inside.
        if type(item) is ssl.SSLCertVerificationError:
            return f"certificate verify failed: {item.verify_message}"
        if type(item) is ssl.SSLError:
            return str(item.reason or item)
        todo += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
        todo += [getattr(item, "certificate_error", None), getattr(item, "os_error", None)]  # aiohttp keeps them here
    return type(exc).__name__


class VaultPermissionDenied(VaultError):
    """Vault refused the token: expired, revoked, or outside its policy."""


class VaultLoginFailed(VaultError):
    """Vault refused the service's AppRole login: an operator must issue a new secret id (retrying cannot help)."""


class SecretNotFound(VaultError):
    """The KV path or version does not exist, or was deleted or destroyed."""


class VersionConflict(VaultError):
    """A KV check-and-set write found another current version than the one expected."""


class VaultRequestRejected(VaultError):
    """Vault rejected the request as malformed (a 4xx other than the ones above)."""


CAS_MISMATCH = "check-and-set parameter did not match"

P = ParamSpec("P")
R = TypeVar("R")


def translate(exc: BaseException) -> VaultError:
    """Map one hvac or requests exception to this module's tree."""
    if isinstance(exc, requests.exceptions.SSLError):
        return VaultTlsRefused(f"TLS with Vault failed: {tls_reason(exc)}")
    if isinstance(exc, requests.RequestException):
        unknown = classify_exception(exc) is Failure.LOST
        return (VaultOutcomeUnknown if unknown else VaultUnavailable)(f"cannot reach Vault: {type(exc).__name__}")
    if isinstance(exc, hvac.exceptions.Forbidden):
        return VaultPermissionDenied(str(exc))
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return SecretNotFound(str(exc))
    if isinstance(exc, hvac.exceptions.InvalidRequest):
        if any(CAS_MISMATCH in str(error) for error in exc.errors or [str(exc)]):
            return VersionConflict(str(exc))
        return VaultRequestRejected(str(exc))
    if isinstance(
        exc,
        hvac.exceptions.VaultDown
        | hvac.exceptions.InternalServerError
        | hvac.exceptions.BadGateway
        | hvac.exceptions.RateLimitExceeded
        | hvac.exceptions.VaultNotInitialized,
    ):
        return VaultUnavailable(str(exc))
    if isinstance(exc, hvac.exceptions.VaultError):
        return VaultRequestRejected(str(exc))
    raise TypeError(f"not a Vault error: {type(exc).__name__}") from exc


def translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` and re-raise any hvac/requests exception as a ``VaultError``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise translate(exc) from exc

    return wrapper
