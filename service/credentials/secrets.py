"""What each auth type's ``credentials`` object holds: one msgspec Struct per auth type, and the limits on it.

Checked on create and update; a problem is a 422 whose ``loc`` points into the object
(``["body", "credentials", "refresh_token"]``) and whose message says what is expected. Fields a type does not
know are kept as given (the stored secret is the object as sent; the Struct is how the service reads it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

import msgspec

from service.credentials.schemas import AuthType
from service.errors import RequestInvalid
from vault.secret import Secret

MAX_SECRET_BYTES = 64 * 1024
MAX_DEPTH = 8
MASK = "*"


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """How a known field is described in ``GET /credentials/auth-types`` and whether it is shown masked."""

    kind: str  # "string", "url", "datetime", "connection_string"
    secret: bool
    description: str


FIELDS = {
    "api_key": FieldDoc("string", True, "The API key"),
    "username": FieldDoc("string", False, "User name"),
    "password": FieldDoc("string", True, "Password"),
    "access_token": FieldDoc("string", True, "Bearer access token"),
    "refresh_token": FieldDoc("string", True, "OAuth2 refresh token"),
    "token_url": FieldDoc("url", False, "OAuth2 token endpoint (https)"),
    "client_id": FieldDoc("string", False, "OAuth2 client id"),
    "client_secret": FieldDoc("string", True, "OAuth2 client secret"),
    "token_endpoint_auth_method": FieldDoc("string", False, "client_secret_basic (default) or client_secret_post"),
    "scope": FieldDoc("string", False, "OAuth2 scope"),
    "revocation_url": FieldDoc(
        "url", False, "RFC 7009 revocation endpoint (https): tokens are revoked there on revoke and on purge"
    ),
    "token_type": FieldDoc("string", False, "Token type, e.g. Bearer"),
    "expires_at": FieldDoc("datetime", False, "When the access token expires (ISO 8601 or epoch seconds)"),
    "public_key": FieldDoc("string", False, "Public key or key id"),
    "secret_key": FieldDoc("string", True, "Secret key"),
    "connection_string": FieldDoc("connection_string", True, "A URL (scheme://...) or a key=value DSN"),
}

Required = Annotated[str, msgspec.Meta(pattern=r"\S")]
"""A required string: present, and not empty or blank."""

_DSN = re.compile(r"^\s*[A-Za-z_][\w ]*=[^;]*(;\s*[A-Za-z_][\w ]*=[^;]*)*;?\s*$|^\s*\w+=\S+(\s+\w+=\S+)*\s*$")


def _error(field: str | None, msg: str, type_: str) -> RequestInvalid:
    loc: list[str | int] = ["body", "credentials"] if field is None else ["body", "credentials", field]
    return RequestInvalid.at(loc, msg, type_)


def parse_expires_at(value: str | int | float) -> datetime:
    """An ``expires_at`` value: ISO 8601 (with a zone, or UTC assumed) or epoch seconds."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _is_datetime(value: str | int | float) -> bool:
    try:
        parse_expires_at(value)
    except (ValueError, OverflowError, OSError):
        return False
    return True


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in {"https", "http"} and bool(parts.hostname)


def _is_connection_string(value: str) -> bool:
    parts = urlsplit(value)
    return bool(parts.scheme and (parts.netloc or parts.path)) or bool(_DSN.match(value))


_CHECKS: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "datetime": (_is_datetime, "Input should be an ISO 8601 date-time or epoch seconds", "datetime_parsing"),
    "url": (_is_url, "Input should be an absolute http(s) URL", "url_parsing"),
    "connection_string": (
        _is_connection_string,
        "Input should be a URL (scheme://...) or a DSN of key=value pairs",
        "connection_string",
    ),
}
"""What a field of each kind (``FieldDoc.kind``) must be beyond its type, the message and the error type."""


class SecretFields(msgspec.Struct, kw_only=True):
    """The fields every auth type may carry, typed when present (an OAuth token's expiry and client settings).
    Each field is checked by its kind (``_CHECKS``) once msgspec has checked its type."""

    expires_at: str | int | float | None = None
    scope: str | None = None
    client_secret: str | None = None
    token_type: str | None = None
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] | None = None

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            valid, msg, type_ = _CHECKS.get(FIELDS[name].kind, (None, "", ""))
            if valid is not None and value is not None and not valid(value):
                raise _error(name, msg, type_)

    @property
    def expiry(self) -> datetime | None:
        return None if self.expires_at is None else parse_expires_at(self.expires_at)


def _requiring(name: str, *required: str) -> type[SecretFields]:
    """A secret type that requires ``required`` (non-blank strings) besides the common fields."""
    fields = [(field, Required) for field in required]
    return cast(type[SecretFields], msgspec.defstruct(name, fields, bases=(SecretFields,), kw_only=True))


ApiKeySecret = _requiring("ApiKeySecret", "api_key")
BasicAuthSecret = _requiring("BasicAuthSecret", "username", "password")
AccessTokenSecret = _requiring("AccessTokenSecret", "access_token")
KeyPairSecret = _requiring("KeyPairSecret", "public_key", "secret_key")
ConnectionStringSecret = _requiring("ConnectionStringSecret", "connection_string")
CustomSecret = _requiring("CustomSecret")  # any non-empty object


class RefreshableSecret(SecretFields, kw_only=True):
    """A token with what refreshes it (RFC 6749 section 6); declared as a class because the refresher reads it."""

    access_token: Required
    refresh_token: Required
    token_url: Required
    client_id: str | None = None
    revocation_url: str | None = None


class OAuthClientSecret(RefreshableSecret, kw_only=True):
    """A refreshable token issued to a registered OAuth client."""

    client_id: Required


SECRET_TYPES: dict[AuthType, type[SecretFields]] = {
    AuthType.api_key: ApiKeySecret,
    AuthType.basic_auth: BasicAuthSecret,
    AuthType.access_token: AccessTokenSecret,
    AuthType.oauth_token: AccessTokenSecret,
    AuthType.oauth_token_refresh: OAuthClientSecret,
    AuthType.oauth_token_refresh_rotation: OAuthClientSecret,
    AuthType.access_token_refresh: RefreshableSecret,
    AuthType.public_key_secret: KeyPairSecret,
    AuthType.connection_string: ConnectionStringSecret,
    AuthType.custom: CustomSecret,
}

REFRESHABLE = frozenset(t for t, kind in SECRET_TYPES.items() if issubclass(kind, RefreshableSecret))


@dataclass(frozen=True, slots=True)
class Validated:
    """A checked ``credentials`` object: the JSON Vault will encrypt, and the typed fields the service reads."""

    plaintext: Secret
    fields: SecretFields


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


_AT = re.compile(r" - at `\$\.(?P<field>[^`.\[]+)`$")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def _refusal(auth_type: AuthType, message: str) -> RequestInvalid:
    """msgspec's message about one field, as the 422 FastAPI clients know."""
    missing = _MISSING.match(message)
    if missing:
        return _error(missing.group("field"), f"Field required for auth_type '{auth_type.value}'", "missing")
    at = _AT.search(message)
    field = at.group("field") if at else None
    if field == "expires_at":
        return _error(field, *_CHECKS["datetime"][1:])
    if "matching regex" in message:
        return _error(field, f"{field} must not be empty", "string_too_short")
    if message.startswith("Invalid enum value"):
        return _error(field, "Input should be 'client_secret_basic' or 'client_secret_post'", "enum")
    return _error(field, "Input should be a valid string", "string_type")


def validate(auth_type: AuthType, credentials: dict[str, Any]) -> Validated:
    """Check ``credentials`` against ``auth_type`` and the limits."""
    if not credentials:
        raise _error(None, "credentials must not be empty", "value_error")
    _check_limits(credentials)  # first: a lone surrogate cannot even be encoded
    plaintext = msgspec.json.encode(credentials)
    if len(plaintext) > MAX_SECRET_BYTES:
        raise _error(
            None, f"credentials must be at most {MAX_SECRET_BYTES} bytes as JSON, got {len(plaintext)}", "too_long"
        )
    try:
        fields = msgspec.convert(credentials, SECRET_TYPES[auth_type])
    except msgspec.ValidationError as exc:
        raise _refusal(auth_type, str(exc)) from None
    return Validated(Secret(plaintext), fields)


def read(auth_type: AuthType, credentials: dict[str, Any]) -> SecretFields:
    """The typed fields of a stored secret (validated when it was stored)."""
    return msgspec.convert(credentials, SECRET_TYPES[auth_type])


# -- the masked view -------------------------------------------------------------------------------------------


MASK_KEEP = 4
"""Characters of a long secret the masked view keeps (the last ones), so a person can tell two keys apart."""
MASK_FULLY_BELOW = 16
"""Secrets shorter than this are masked completely: four characters of a 9-character password is too much."""


def is_secret(name: str, auth_type: AuthType | None = None) -> bool:
    """Whether a field is shown masked: every field of ``custom`` (its names are the user's and mean nothing to
    us: a ``client_id`` there may hold anything), and elsewhere the known secret fields and every unknown one."""
    if auth_type is AuthType.custom:
        return True
    known = FIELDS.get(name)
    return True if known is None else known.secret


def mask(value: str) -> str:
    """All but the last 4 characters masked; values shorter than 16 characters fully masked."""
    if len(value) < MASK_FULLY_BELOW:
        return MASK * len(value)
    return MASK * (len(value) - MASK_KEEP) + value[-MASK_KEEP:]


def masked(credentials: dict[str, Any], auth_type: AuthType | None = None) -> dict[str, Any]:
    """The object with every secret string masked; non-string secret values replaced by a mask. The one place the
    masked view is decided (``GET /credentials/{id}?include=masked``)."""
    out: dict[str, Any] = {}
    for name, value in credentials.items():
        if not is_secret(name, auth_type):
            out[name] = value
        elif isinstance(value, str):
            out[name] = mask(value)
        else:
            out[name] = MASK * 8
    return out


def masked_fields_sent_back(
    current: dict[str, Any], new: dict[str, Any], auth_type: AuthType | None = None
) -> list[str]:
    """Secret fields whose new value is exactly the masked form of the current one (a form sent back unedited)."""
    return [
        name
        for name, value in new.items()
        if is_secret(name, auth_type)
        and isinstance(value, str)
        and isinstance(current.get(name), str)
        and MASK in value
        and value == mask(current[name])
        and value != current[name]
    ]


# OAuth's optional fields: part of every type's schema (typed when present), but advertised only where they mean
# something, so an `api_key` is not described as taking a `client_secret`.
_OAUTH_FIELDS = frozenset({"scope", "client_secret", "token_type", "token_endpoint_auth_method"})
_TOKEN_TYPES = REFRESHABLE | {AuthType.access_token, AuthType.oauth_token}


def describe() -> dict[str, Any]:
    """The schema of each auth type, for ``GET /credentials/auth-types``: required fields first."""
    result = {}
    for auth_type, kind in SECRET_TYPES.items():
        info = msgspec.inspect.type_info(kind)
        fields = [
            field
            for field in sorted(info.fields, key=lambda f: not f.required)  # type: ignore[attr-defined]
            if field.required or auth_type in _TOKEN_TYPES or field.name not in _OAUTH_FIELDS
        ]
        result[auth_type.value] = {
            "fields": [
                {
                    "name": field.name,
                    "type": FIELDS[field.name].kind,
                    "secret": FIELDS[field.name].secret,
                    "required": field.required,
                    "description": FIELDS[field.name].description,
                }
                for field in fields
            ],
            "other_fields": "kept as given; shown masked" if auth_type is AuthType.custom else "kept as given",
            "refreshable": auth_type in REFRESHABLE,
        }
    return result
