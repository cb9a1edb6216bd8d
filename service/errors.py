"""The service's errors and the one mapping that turns every error into a response Mielto clients parse.

    ServiceError                      {"detail": "..."}
    ├── BadRequest            400     a user of several workspaces did not say which one
    ├── NotFound              404     also for another workspace's objects, byte for byte the same
    ├── Unauthorized          401     with WWW-Authenticate: Bearer
    ├── Forbidden             403     names the missing permission
    ├── Conflict              409     the credential's state forbids it (disabled, revoked, expired)
    ├── Gone                  410     a version that was destroyed
    ├── PreconditionFailed    412     If-Match no longer matches
    ├── PayloadTooLarge       413     a proxied request body over CREDENTIALS_PROXY_MAX_REQUEST_BYTES
    ├── RequestInvalid        422     {"detail": [{"loc": [...], "msg": "...", "type": "..."}]}
    ├── BadGateway            502     an OAuth provider's token endpoint failed, timed out or was refused by the egress rules
    ├── BackendUnavailable    503     with Retry-After; Vault or Postgres cannot serve now
    ├── SecretStoreMisconfigured 500  Vault refused the service (policy, login, mount, key): retrying cannot help
    └── GatewayTimeout        504     a proxied upstream did not answer in time

Errors from below (``vault.errors``, asyncpg, Litestar's own validation) are translated here, once. Their
messages can carry URLs, SQL or hostnames, so they go to the log and never to the client.
"""

from __future__ import annotations

import enum
import logging
import re
from typing import Any

import asyncpg
import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import ClientException, HTTPException, SerializationException, ValidationException
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY, HTTP_500_INTERNAL_SERVER_ERROR

from service.schemas import ReadSchema
from service.telemetry.metrics import count_auth_failure
from vault.errors import VaultError, VaultUnavailable

log = logging.getLogger("service.errors")


class ServiceError(Exception):
    """Base of the tree; each subclass names its status as a class keyword (``class NotFound(ServiceError,
    status=404)``)."""

    status_code = HTTP_500_INTERNAL_SERVER_ERROR
    headers: dict[str, str] | None = None

    def __init_subclass__(cls, status: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status_code = status

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ServiceError, status=400): ...


class NotFound(ServiceError, status=404): ...


class AuthFailure(enum.StrEnum):
    """Why a request was not authenticated: decided where the 401 is raised, then read by the failure throttle
    (its log line) and the metrics (the ``reason`` label of ``credentials_auth_failures_total``)."""

    missing = "missing"
    """No credentials at all."""
    malformed_header = "malformed_header"
    """An Authorization header that is not ``Bearer <credentials>``."""
    invalid_api_key = "invalid_api_key"
    """Unknown, wrong, revoked, inactive or expired API key (one reason: the API does not tell them apart)."""
    invalid_token = "invalid_token"  # noqa: S105 (a reason, not a password)
    """A user token that fails verification or has unusable claims."""
    expired_token = "expired_token"  # noqa: S105
    user_tokens_off = "user_tokens_off"
    """A user token sent to a service configured without user-token keys."""
    invalid_grant = "invalid_grant"
    """A grant token that is unknown, expired, revoked, used up, or presented outside its credential's proxy."""


class Unauthorized(ServiceError, status=401):
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012 (read-only class constant)

    def __init__(self, detail: str, reason: AuthFailure) -> None:
        super().__init__(detail)
        self.reason = reason


class Forbidden(ServiceError, status=403): ...


class Conflict(ServiceError, status=409): ...


class Gone(ServiceError, status=410): ...


class PreconditionFailed(ServiceError, status=412): ...


class PayloadTooLarge(ServiceError, status=413): ...


class BadGateway(ServiceError, status=502): ...


class GatewayTimeout(ServiceError, status=504): ...


class BackendUnavailable(ServiceError, status=503): ...


class SecretStoreMisconfigured(ServiceError, status=500): ...


SECRET_STORE_MISCONFIGURED = "The secret store refused the service's request; see the service's log"  # noqa: S105 (a message)


class RequestInvalid(ServiceError, status=HTTP_422_UNPROCESSABLE_ENTITY):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("Validation error")
        self.errors = errors

    @classmethod
    def at(cls, loc: list[str | int], msg: str, type_: str) -> RequestInvalid:
        return cls([{"loc": loc, "msg": msg, "type": type_}])


CREDENTIAL_NOT_FOUND = "Credential not found"


class Detail(ReadSchema, frozen=True, kw_only=True):
    """An error: ``{"detail": "message"}``, as Mielto's clients parse it."""

    detail: str


class ValidationError(ReadSchema, frozen=True, kw_only=True):
    loc: list[str | int]
    msg: str
    type: str


class HTTPValidationError(ReadSchema, frozen=True, kw_only=True):
    """A 422: every problem found in the request, with where it is (``loc``)."""

    detail: list[ValidationError] = msgspec.field(default_factory=list)


# asyncpg and the OS raise these when Postgres is down, restarting or unreachable.
DATABASE_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,  # the server's max_connections is reached
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a failover left us on a standby
    asyncpg.exceptions.QueryCanceledError,  # statement timeout or an operator's cancel
    # asyncpg's client-side state errors: a connection that died mid-transaction refuses the next step ("cannot
    # switch to state ..."), and with a multi-host DATABASE_URL (target_session_attrs=read-write) during a failover
    # no host is the primary yet (TargetServerAttributeNotMatched). Both pass once the pool reconnects.
    # A pooled connection that died with the server, first used mid-transaction (seen when the API-key cache
    # spared the request the lookup that used to meet the dead connection first).
    # A pooled connection that a server shutdown broke in the middle of a query (seen under load while Postgres
    # stopped: "cannot switch to state 12; another operation is in progress"): the database going away, as above.
    asyncpg.exceptions.InternalClientError,
)

# msgspec's messages, turned into the (msg, type) pairs FastAPI clients know from pydantic.
_MESSAGES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"Object missing required field `(?P<field>[^`]+)`"), "Field required", "missing"),
    (re.compile(r"Object contains unknown field `(?P<field>[^`]+)`"), "Extra inputs are not permitted", "extra_forbidden"),
    (re.compile(r"Expected `str` of length <= (?P<n>\d+)"), "String should have at most {n} character{s}", "string_too_long"),
    (re.compile(r"Expected `str` of length >= (?P<n>\d+)"), "String should have at least {n} character{s}", "string_too_short"),
    (re.compile(r"Expected `int` >= (?P<n>-?\d+)"), "Input should be greater than or equal to {n}", "greater_than_equal"),
    (re.compile(r"Expected `int` <= (?P<n>-?\d+)"), "Input should be less than or equal to {n}", "less_than_equal"),
    (re.compile(r"Expected `str` matching regex '\^\[\^\\\\x00\]\*\$'"), "String should not contain NUL characters", "string_pattern_mismatch"),
    (re.compile(r"Expected `str` matching regex '(?P<pattern>.*)'"), "String should match pattern '{pattern}'", "string_pattern_mismatch"),
    (re.compile(r"Expected `datetime` with a timezone component"), "Input should have timezone info", "timezone_aware"),
    (re.compile(r"Invalid enum value (?P<value>.+)"), "Input should be one of the allowed values, not {value}", "enum"),
    (re.compile(r"Expected `int( \| null)?`, got `str`"), "Input should be a valid integer", "int_parsing"),
    (re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`"), "Input should be a valid {want}, not {got}", "{kind}_type"),
]  # fmt: skip
# msgspec's type names -> (pydantic's word in messages, pydantic's error type prefix)
_TYPES = {
    "str": ("string", "string"),
    "int": ("integer", "int"),
    "float": ("number", "float"),
    "bool": ("boolean", "bool"),
    "object": ("dictionary", "dict"),
    "array": ("list", "list"),
    "null": ("null", "none"),
}
# Fields whose values are enums: a wrong JSON type there is an "enum" error, as pydantic reports it.
_ENUM_FIELDS = frozenset({"auth_type", "credential_type"})


def _translate_message(message: str, key: str) -> tuple[str, str, str | None]:
    """(msg, type, field) for one msgspec message; ``field`` is set when the message names a missing/unknown one."""
    for pattern, msg, type_ in _MESSAGES:
        match = pattern.search(message)
        if not match:
            continue
        values = match.groupdict()
        if "want" in values:
            # "str | null" -> the non-null alternative is what the field wants.
            want = next((t for t in values["want"].split(" | ") if t != "null"), "null")
            if key in _ENUM_FIELDS:
                return "Input should be one of the allowed values", "enum", None
            values = {"want": _TYPES.get(want, (want, want))[0], "got": _TYPES.get(values["got"], (values["got"],))[0]}
            values["kind"] = _TYPES.get(want, (want, want))[1]
        if "n" in values:
            values["s"] = "" if values["n"] == "1" else "s"
        return msg.format(**values), type_.format(**values), values.get("field")
    return message, "value_error", None


_HEADER_NAMES = {"x_workspace_id": "X-Workspace-Id", "x_api_key": "X-API-Key", "authorization": "Authorization"}


def validation_to_422(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's validation failures (body, query, path, header) as FastAPI's 422 shape."""
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        raw_source = item.get("source") or "body"
        source = str(getattr(raw_source, "value", raw_source))
        key = str(item.get("key") or "")
        message = str(item.get("message", ""))
        if key in {"", "data"} and source == "body":
            errors.append(_body_error(message))
            continue
        msg, type_, field = _translate_message(message, key)
        loc: list[str | int] = [source]
        if source == "header":
            loc.append(_HEADER_NAMES.get(key, key))
        elif key:
            loc.extend(int(part) if part.isdigit() else part for part in key.split("."))
        if field:
            loc.append(field)
        errors.append({"loc": loc, "msg": msg, "type": type_})
    if not errors:
        errors.append({"loc": ["body"], "msg": "Invalid request", "type": "value_error"})
    return _json({"detail": errors}, HTTP_422_UNPROCESSABLE_ENTITY)


def _body_error(message: str) -> dict[str, Any]:
    """An error about the body as a whole: missing, not an object, or a missing/unknown field in it."""
    if message == "'data'":  # Litestar's KeyError text when no body was sent at all
        return {"loc": ["body"], "msg": "Field required", "type": "missing"}
    if message.startswith("Expected `object`"):
        return {
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "type": "model_attributes_type",
        }
    msg, type_, field = _translate_message(message, "")
    return {"loc": ["body", field] if field else ["body"], "msg": msg, "type": type_}


def client_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own HTTP errors (404 route, 405, 413, malformed JSON) in the ``{"detail": ...}`` shape."""
    if isinstance(exc, ClientException) and isinstance(exc.__cause__, SerializationException):
        # The body is not JSON (or not the JSON msgspec can read): a 422, as FastAPI answers.
        return _json(
            {
                "detail": [
                    {"loc": ["body"], "msg": "JSON decode error: the body is not valid JSON", "type": "json_invalid"}
                ]
            },
            HTTP_422_UNPROCESSABLE_ENTITY,
        )
    if isinstance(exc.__cause__, msgspec.ValidationError):
        # Litestar takes some body validation failures for its own (an unknown field whose name is not ASCII,
        # found by schemathesis): they are the caller's, a 422 like every other.
        return _json({"detail": [_body_error(str(exc.__cause__))]}, HTTP_422_UNPROCESSABLE_ENTITY)
    if exc.status_code >= 500:
        log.error("internal error: %s", exc.detail, exc_info=exc)
        return _json({"detail": "Internal Server Error"}, exc.status_code)
    return _json({"detail": exc.detail}, exc.status_code, exc.headers)


def service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[Any]:
    if isinstance(exc, Unauthorized | Forbidden):
        count_auth_failure(exc.reason if isinstance(exc, Unauthorized) else "forbidden")
    if isinstance(exc, RequestInvalid):
        return _json({"detail": exc.errors}, exc.status_code)
    headers = exc.headers
    if isinstance(exc, BackendUnavailable):
        headers = {"Retry-After": str(request.app.state.settings.http.retry_after_seconds)}
    return _json({"detail": exc.detail}, exc.status_code, headers)


_INTEGRITY = "message authentication failed"


def vault_error(request: Request[Any, Any, Any], exc: VaultError) -> Response[Any]:
    """A Vault failure that reached the edge (never Vault's message). Unavailable (sealed, down, slow): 503 with
    Retry-After. Anything else (403, a refused login, a missing mount or key) is a configuration error that retrying
    cannot fix: 500, and an error log line saying what to check."""
    if isinstance(exc, VaultUnavailable):
        log.warning("vault %s: %s", type(exc).__name__, exc)
        return service_error(request, BackendUnavailable("The secret store is unavailable; retry later"))
    message = " ".join(str(exc).split())  # Vault's multi-line "1 error occurred: * ..." on one line
    if _INTEGRITY in message:
        log.error(
            "vault refused to decrypt: the ciphertext is bound to another workspace or credential (moved or "
            "tampered): %s",
            message,
        )
        return service_error(request, SecretStoreMisconfigured(SECRET_STORE_MISCONFIGURED))
    log.error(
        "vault configuration error (%s): %s; check the service's Vault policy (`credctl vault-bootstrap`), "
        "CREDENTIALS_TRANSIT_MOUNT, CREDENTIALS_TRANSIT_KEY and CREDENTIALS_KV_MOUNT, and /health/ready",
        type(exc).__name__,
        message,
    )
    return service_error(request, SecretStoreMisconfigured(SECRET_STORE_MISCONFIGURED))


def database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning("database unavailable: %s", type(exc).__name__)
    return service_error(request, BackendUnavailable("The database is unavailable; retry later"))


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, DATABASE_UNAVAILABLE):
        return database_error(request, exc)
    if isinstance(exc, RecursionError):
        # A JSON body nested thousands deep (under the size limit) exhausts the decoder's recursion: the input's
        # fault, and nothing was written (it happens before the handler runs).
        return _json(
            {"detail": [{"loc": ["body"], "msg": "The body nests too deeply", "type": "too_deep"}]},
            HTTP_422_UNPROCESSABLE_ENTITY,
        )
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _json({"detail": "Internal Server Error"}, HTTP_500_INTERNAL_SERVER_ERROR)


def _json(content: Any, status_code: int, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(content, status_code=status_code, headers=headers, media_type=MediaType.JSON)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    ValidationException: validation_to_422,
    HTTPException: client_error,
    ServiceError: service_error,
    VaultError: vault_error,
    Exception: unexpected_error,
}
