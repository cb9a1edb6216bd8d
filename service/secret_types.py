"""What each auth type's ``credentials`` object must contain, which fields are secret, and the limits on it.

Checked on create and update; a problem is a 422 whose ``loc`` points into the object
(``["body", "credentials", "refresh_token"]``) and whose message says what is expected. Fields a type does not
know are kept as given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from service.errors import RequestInvalid
from service.schemas import AuthType
from vault.secret import Secret

MAX_SECRET_BYTES = 64 * 1024
MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str  # "string", "url", "datetime", "connection_string"
    secret: bool
    description: str


F = {
    f.name: f
    for f in (
        Field("api_key", "string", True, "The API key"),
        Field("username", "string", False, "User name"),
        Field("password", "string", True, "Password"),
        Field("access_token", "string", True, "Bearer access token"),
        Field("refresh_token", "string", True, "OAuth2 refresh token"),
        Field("token_url", "url", False, "OAuth2 token endpoint (https)"),
        Field("client_id", "string", False, "OAuth2 client id"),
        Field("client_secret", "string", True, "OAuth2 client secret"),
        Field("token_endpoint_auth_method", "string", False, "client_secret_basic (default) or client_secret_post"),
        Field("scope", "string", False, "OAuth2 scope"),
        Field("token_type", "string", False, "Token type, e.g. Bearer"),
        Field("expires_at", "datetime", False, "When the access token expires (ISO 8601 or epoch seconds)"),
        Field("public_key", "string", False, "Public key or key id"),
        Field("secret_key", "string", True, "Secret key"),
        Field("connection_string", "connection_string", True, "A URL (scheme://...) or a key=value DSN"),
    )
}

OPTIONAL = ("expires_at", "scope", "client_secret", "token_type", "token_endpoint_auth_method")

REQUIRED: dict[AuthType, tuple[str, ...]] = {
    AuthType.api_key: ("api_key",),
    AuthType.basic_auth: ("username", "password"),
    AuthType.access_token: ("access_token",),
    AuthType.oauth_token: ("access_token",),
    AuthType.oauth_token_refresh: ("access_token", "refresh_token", "token_url", "client_id"),
    AuthType.oauth_token_refresh_rotation: ("access_token", "refresh_token", "token_url", "client_id"),
    AuthType.access_token_refresh: ("access_token", "refresh_token", "token_url"),
    AuthType.public_key_secret: ("public_key", "secret_key"),
    AuthType.connection_string: ("connection_string",),
    AuthType.custom: (),
}

REFRESHABLE = frozenset(
    {AuthType.oauth_token_refresh, AuthType.oauth_token_refresh_rotation, AuthType.access_token_refresh}
)

_DSN = re.compile(r"^\s*[A-Za-z_][\w ]*=[^;]*(;\s*[A-Za-z_][\w ]*=[^;]*)*;?\s*$|^\s*\w+=\S+(\s+\w+=\S+)*\s*$")


def _error(field: str | None, msg: str, type_: str) -> RequestInvalid:
    loc: list[str | int] = ["body", "credentials"] if field is None else ["body", "credentials", field]
    return RequestInvalid.at(loc, msg, type_)


def _check_limits(value: Any, depth: int = 1) -> None:
    """Nesting depth and NUL-free strings, everywhere in the object (keys included)."""
    if depth > MAX_DEPTH:
        raise _error(None, f"credentials may nest at most {MAX_DEPTH} levels", "too_deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise _error(None, "keys must not contain NUL characters", "string_nul")
            _check_limits(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_limits(item, depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise _error(None, "strings must not contain NUL characters", "string_nul")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _error(None, "strings must be valid UTF-8 (no lone surrogates)", "string_unicode") from None


def parse_expires_at(value: Any) -> datetime:
    """An ``expires_at`` value: ISO 8601 (with a zone, or UTC assumed) or epoch seconds."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(value)


def _check_field(auth_type: AuthType, field: Field, value: Any) -> None:
    if field.kind == "datetime":
        try:
            parse_expires_at(value)
        except (ValueError, OverflowError, OSError):
            raise _error(
                field.name, "Input should be an ISO 8601 date-time or epoch seconds", "datetime_parsing"
            ) from None
        return
    if not isinstance(value, str):
        raise _error(field.name, "Input should be a valid string", "string_type")
    if field.name in REQUIRED[auth_type] and not value.strip():
        raise _error(field.name, f"{field.name} must not be empty", "string_too_short")
    if field.kind == "url":
        parts = urlsplit(value)
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            raise _error(field.name, "Input should be an absolute http(s) URL", "url_parsing")
    if field.kind == "connection_string":
        parts = urlsplit(value)
        if not (parts.scheme and (parts.netloc or parts.path)) and not _DSN.match(value):
            raise _error(
                field.name, "Input should be a URL (scheme://...) or a DSN of key=value pairs", "connection_string"
            )
    if field.name == "token_endpoint_auth_method" and value not in {"client_secret_basic", "client_secret_post"}:
        raise _error(field.name, "Input should be 'client_secret_basic' or 'client_secret_post'", "enum")


def validate(auth_type: AuthType, credentials: dict[str, Any]) -> Secret:
    """Check ``credentials`` against ``auth_type`` and the limits; returns the JSON Vault will encrypt."""
    if not credentials:
        raise _error(None, "credentials must not be empty", "value_error")
    plaintext = msgspec.json.encode(credentials)
    if len(plaintext) > MAX_SECRET_BYTES:
        raise _error(
            None, f"credentials must be at most {MAX_SECRET_BYTES} bytes as JSON, got {len(plaintext)}", "too_long"
        )
    _check_limits(credentials)
    for name in REQUIRED[auth_type]:
        if name not in credentials:
            raise _error(name, f"Field required for auth_type '{auth_type.value}'", "missing")
    for name, value in credentials.items():
        field = F.get(name)
        if field is not None and (name in REQUIRED[auth_type] or name in OPTIONAL):
            _check_field(auth_type, field, value)
    return Secret(plaintext)


def expires_at_of(credentials: dict[str, Any]) -> datetime | None:
    """The ``expires_at`` a credentials object carries, if any (already validated)."""
    value = credentials.get("expires_at")
    return None if value is None else parse_expires_at(value)


def is_secret(auth_type: AuthType, name: str) -> bool:
    """Whether a field is shown masked. Unknown fields of ``custom`` (and any unknown field) count as secret."""
    field = F.get(name)
    return True if field is None else field.secret


MASK = "*"


def mask(value: str) -> str:
    """All but the last 4 characters masked; values of 8 characters or fewer fully masked."""
    if len(value) <= 8:
        return MASK * len(value)
    return MASK * (len(value) - 4) + value[-4:]


def masked(auth_type: AuthType, credentials: dict[str, Any]) -> dict[str, Any]:
    """The object with every secret string masked; non-string secret values replaced by a mask."""
    out: dict[str, Any] = {}
    for name, value in credentials.items():
        if not is_secret(auth_type, name):
            out[name] = value
        elif isinstance(value, str):
            out[name] = mask(value)
        else:
            out[name] = MASK * 8
    return out


def masked_fields_sent_back(auth_type: AuthType, current: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Secret fields whose new value is exactly the masked form of the current one (a form sent back unedited)."""
    return [
        name
        for name, value in new.items()
        if is_secret(auth_type, name)
        and isinstance(value, str)
        and isinstance(current.get(name), str)
        and MASK in value
        and value == mask(current[name])
        and value != current[name]
    ]


def describe() -> dict[str, Any]:
    """The schema of each auth type, for ``GET /credentials/auth-types``."""
    result = {}
    for auth_type in AuthType:
        names = list(REQUIRED[auth_type]) + [n for n in OPTIONAL if n not in REQUIRED[auth_type]]
        result[auth_type.value] = {
            "fields": [
                {
                    "name": name,
                    "type": F[name].kind,
                    "secret": F[name].secret,
                    "required": name in REQUIRED[auth_type],
                    "description": F[name].description,
                }
                for name in names
            ],
            "other_fields": "kept as given; shown masked" if auth_type is AuthType.custom else "kept as given",
            "refreshable": auth_type in REFRESHABLE,
        }
    return result
