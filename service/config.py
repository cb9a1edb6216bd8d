"""Settings: frozen sections built from the environment by one loader (the only module that reads ``os.environ``).

Each field names its environment variable beside it (``Env``); its type and ``msgspec.Meta`` constraints are the
whole check: ``msgspec.convert`` turns the strings into typed values and refuses what is out of range, and the
loader turns each refusal into one line naming the variable, the value and what is expected. Rules that span
fields live in the sections' ``__post_init__``. A section can be loaded alone (``DatabaseSettings.from_env()``)
by commands that need nothing else.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from vault.auth import AppRoleLogin


class ConfigError(Exception):
    """A setting is missing or has a value the service refuses to run with (the message names it)."""


@dataclass(frozen=True, slots=True)
class Env:
    """The environment variable a field is read from."""

    name: str
    secret: bool = False
    """Kept out of ``repr``."""
    file: bool = False
    """May instead be given as the path of a file holding it, in ``<name>_FILE`` (Docker and Kubernetes secrets)."""
    example: str | None = None
    """Shown when a required value is missing."""


S = TypeVar("S", bound="Section")


class Section(msgspec.Struct, frozen=True, kw_only=True):
    """A group of settings. Frozen: settings are read once at start-up and never change while the process runs."""

    def __repr__(self) -> str:
        shown = []
        for name, env in _envs(type(self)).items():
            value = getattr(self, name)
            shown.append(f"{name}={'***' if env is not None and env.secret and value is not None else repr(value)}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @classmethod
    def from_env(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
        """This section from ``environ`` (default: ``os.environ``); ``ConfigError`` naming what is wrong."""
        env = os.environ if environ is None else environ
        where: dict[str, tuple[Env, str | None]] = {}
        raw = _read(cls, env, "$", where)
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(_explain(str(exc), cls, where)) from None


# Values only a developer's machine should use; refused outside dev mode.
_PLACEHOLDER_TOKENS = frozenset({"root", "dev-root-token", "dev-only-token", "changeme", "token"})
# JWT secrets from tutorials and local stacks (Supabase's local default among them), compared lower-cased.
_PLACEHOLDER_JWT_SECRETS = frozenset(
    {
        "super-secret-jwt-token-with-at-least-32-characters-long",
        "your-super-secret-jwt-token-with-at-least-32-characters-long",
        "changeme-changeme-changeme-changeme",
        "change-me-change-me-change-me-change-me",
        "secret-secret-secret-secret-secret-secret",
    }
)
_DAY = 86_400


class DatabaseSettings(Section, frozen=True, kw_only=True):
    """Postgres, which holds the metadata."""

    url: Annotated[str, Env("DATABASE_URL", example="postgresql://postgres@127.0.0.1:5432/credentials")]
    """Postgres DSN for the metadata."""
    pool_min: Annotated[int, Env("CREDENTIALS_DB_POOL_MIN"), msgspec.Meta(ge=0, le=1000)] = 2
    """Connections the pool keeps open."""
    pool_max: Annotated[int, Env("CREDENTIALS_DB_POOL_MAX"), msgspec.Meta(ge=1, le=1000)] = 32
    """Most connections the pool opens."""

    def __post_init__(self) -> None:
        if self.pool_min > self.pool_max:
            raise ConfigError(
                f"CREDENTIALS_DB_POOL_MIN={self.pool_min} is above CREDENTIALS_DB_POOL_MAX={self.pool_max}"
            )


class VaultSettings(Section, frozen=True, kw_only=True):
    """Vault or OpenBao, which holds the secrets, and how the service logs in to it."""

    addr: Annotated[str, Env("VAULT_ADDR", example="http://127.0.0.1:8200")]
    """Base URL of Vault or OpenBao."""
    token: Annotated[str | None, Env("VAULT_TOKEN", secret=True)] = None
    """A Vault token. Required unless AppRole is configured (AppRole wins when both are set). A root token is
    accepted only in dev mode."""
    role_id: Annotated[str | None, Env("VAULT_ROLE_ID", secret=True, file=True)] = None
    """AppRole role id, used with the secret id."""
    secret_id: Annotated[str | None, Env("VAULT_SECRET_ID", secret=True, file=True)] = None
    """AppRole secret id. The service logs in at start-up, renews its token at 2/3 of its TTL and logs in again
    when renewal reaches the role's max TTL or the token is refused."""
    secret_id_file: Annotated[str | None, Env("VAULT_SECRET_ID_FILE")] = None
    """Set when the secret id comes from a file: the file is read again before each AppRole login, so a secret id
    rotated in place is picked up without a restart."""
    approle_mount: Annotated[str, Env("CREDENTIALS_VAULT_APPROLE_MOUNT"), msgspec.Meta(min_length=1)] = "approle"
    """Mount path of the AppRole auth method the service logs in with."""
    transit_mount: Annotated[str, Env("CREDENTIALS_TRANSIT_MOUNT"), msgspec.Meta(min_length=1)] = "transit"
    """Mount path of the transit engine."""
    transit_key: Annotated[str, Env("CREDENTIALS_TRANSIT_KEY"), msgspec.Meta(min_length=1)] = "credentials"
    """Name of the derived transit key that encrypts every secret."""
    kv_mount: Annotated[str, Env("CREDENTIALS_KV_MOUNT"), msgspec.Meta(min_length=1)] = "credentials"
    """Mount path of the KV v2 engine that holds the ciphertexts."""
    workers: Annotated[int, Env("CREDENTIALS_VAULT_WORKERS"), msgspec.Meta(ge=1, le=256)] = 32
    """Threads running Vault calls; also the size of the HTTP pool to Vault."""
    timeout: Annotated[float, Env("CREDENTIALS_VAULT_TIMEOUT"), msgspec.Meta(gt=0, le=300)] = 5.0
    """Seconds before one Vault call is given up (answers 503)."""

    @property
    def uses_approle(self) -> bool:
        return bool(self.role_id and self.secret_id)

    def login(self) -> str | AppRoleLogin:
        """What the service logs in with: AppRole when a role id and secret id are set, else the token."""
        if self.role_id and self.secret_id:
            source: str | Callable[[], str] = self.secret_id
            if self.secret_id_file:
                path = Path(self.secret_id_file)
                source = lambda: path.read_text().strip()  # noqa: E731 (read at each login)
            return AppRoleLogin(role_id=self.role_id, secret_id=source, mount=self.approle_mount)
        return self.token or ""

    def __post_init__(self) -> None:
        if not self.token and not self.uses_approle:
            raise ConfigError("set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole login")


class HttpSettings(Section, frozen=True, kw_only=True):
    """What the HTTP API accepts and answers."""

    max_body_bytes: Annotated[int, Env("CREDENTIALS_MAX_BODY_BYTES"), msgspec.Meta(ge=1024, le=64 * 1024 * 1024)] = (
        256 * 1024
    )
    """Request bodies larger than this answer 413."""
    retry_after_seconds: Annotated[int, Env("CREDENTIALS_RETRY_AFTER"), msgspec.Meta(ge=1, le=3600)] = 5
    """The ``Retry-After`` sent with 503 when a backend is unavailable."""


class LifecycleSettings(Section, frozen=True, kw_only=True):
    """How long secrets, versions and deletions are kept."""

    max_versions: Annotated[int, Env("CREDENTIALS_MAX_VERSIONS"), msgspec.Meta(ge=1, le=100)] = 10
    """KV versions kept per credential; older ones are destroyed by Vault."""
    delete_retention_seconds: Annotated[
        int, Env("CREDENTIALS_DELETE_RETENTION"), msgspec.Meta(ge=0, le=3650 * _DAY)
    ] = 7 * _DAY
    """Seconds a deleted credential can be restored before its secret is destroyed (0: destroyed at once, as
    Mielto's delete)."""
    purge_interval_seconds: Annotated[int, Env("CREDENTIALS_PURGE_INTERVAL"), msgspec.Meta(ge=0, le=30 * _DAY)] = 3600
    """Seconds between the service's own purges of expired deletions (0: never; ``credctl purge`` from cron)."""
    list_exact_count_limit: Annotated[
        int, Env("CREDENTIALS_LIST_EXACT_COUNT_LIMIT"), msgspec.Meta(ge=1, le=10_000_000)
    ] = 10_000
    """The list's ``total`` is exact up to this many matching credentials and the planner's estimate beyond it, so
    a page of a huge workspace does not cost a full count."""


class JwtSettings(Section, frozen=True, kw_only=True):
    """User tokens (JWT): how they are verified. With neither a secret nor a keys file, they are refused."""

    hs256_secret: Annotated[str | None, Env("CREDENTIALS_JWT_HS256_SECRET", secret=True, file=True)] = None
    """The shared secret of HS256 user tokens (Supabase's "JWT secret"); at least 32 bytes."""
    public_keys_file: Annotated[str | None, Env("CREDENTIALS_JWT_PUBLIC_KEYS_FILE")] = None
    """A PEM file (public keys or certificates) or a JWKS JSON file with the RS256/ES256 keys that sign user tokens."""
    issuer: Annotated[str | None, Env("CREDENTIALS_JWT_ISSUER")] = None
    """When set, a user token's ``iss`` must equal it."""
    audience: Annotated[str | None, Env("CREDENTIALS_JWT_AUDIENCE")] = None
    """When set, a user token's ``aud`` must contain it (Supabase: ``authenticated``); when unset, a token that
    carries an ``aud`` is refused."""
    workspaces_claim: Annotated[
        str, Env("CREDENTIALS_JWT_WORKSPACES_CLAIM"), msgspec.Meta(pattern=r"^[^.]+(\.[^.]+)*$")
    ] = "workspaces"
    """The claim (a dotted path, e.g. ``app_metadata.workspaces``) listing the user's workspaces and roles."""
    leeway_seconds: Annotated[int, Env("CREDENTIALS_JWT_LEEWAY"), msgspec.Meta(ge=0, le=300)] = 30
    """Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds."""

    def __post_init__(self) -> None:
        if self.hs256_secret is not None and len(self.hs256_secret.encode()) < 32:
            raise ConfigError("CREDENTIALS_JWT_HS256_SECRET must be at least 32 bytes (RFC 7518, section 3.2)")


class OAuthSettings(Section, frozen=True, kw_only=True):
    """OAuth token refresh: when it happens, and which token endpoints may be called."""

    refresh_skew_seconds: Annotated[int, Env("CREDENTIALS_OAUTH_REFRESH_SKEW"), msgspec.Meta(ge=0, le=_DAY)] = 60
    """Reveal refreshes a refreshable credential whose access token expires within this many seconds (or has)."""
    proactive_window_seconds: Annotated[
        int, Env("CREDENTIALS_OAUTH_PROACTIVE_WINDOW"), msgspec.Meta(ge=0, le=7 * _DAY)
    ] = 300
    """The background refresh (and ``credctl refresh-due``) refreshes tokens expiring within this many seconds.
    Keep it below the providers' token lifetimes."""
    proactive_interval_seconds: Annotated[
        int, Env("CREDENTIALS_OAUTH_PROACTIVE_INTERVAL"), msgspec.Meta(ge=0, le=_DAY)
    ] = 60
    """Seconds between background refresh passes, jittered; each pass spreads its refreshes over up to half of it
    (0: no background refresh; ``credctl refresh-due`` from cron)."""
    allow_loopback: Annotated[bool, Env("CREDENTIALS_OAUTH_ALLOW_LOOPBACK")] = False
    """Allow token endpoints on loopback addresses, over plain http too (tests and development only)."""
    allow_private: Annotated[bool, Env("CREDENTIALS_OAUTH_ALLOW_PRIVATE")] = False
    """Allow token endpoints on private and link-local addresses (an identity provider inside your network). Cloud
    metadata addresses are refused regardless."""
    timeout_seconds: Annotated[float, Env("CREDENTIALS_OAUTH_TIMEOUT"), msgspec.Meta(gt=0, le=300)] = 10.0
    """Deadline of one call to a token endpoint (resolve, connect, send, read)."""
    max_attempts: Annotated[int, Env("CREDENTIALS_OAUTH_MAX_ATTEMPTS"), msgspec.Meta(ge=1, le=10)] = 3
    """Calls made for one refresh when the endpoint times out, cannot be reached or answers 5xx/429; the refresh
    then answers 502."""
    retry_backoff_seconds: Annotated[float, Env("CREDENTIALS_OAUTH_RETRY_BACKOFF"), msgspec.Meta(ge=0, le=60)] = 0.5
    """Pause before the second attempt, doubled for each later one (jittered, at most 5 s)."""
    max_response_bytes: Annotated[
        int, Env("CREDENTIALS_OAUTH_MAX_RESPONSE_BYTES"), msgspec.Meta(ge=1024, le=16 * 1024 * 1024)
    ] = 64 * 1024
    """A token endpoint answer larger than this is refused (502)."""


class IdempotencySettings(Section, frozen=True, kw_only=True):
    """``Idempotency-Key`` on create, refresh, restore and version restore."""

    ttl_seconds: Annotated[int, Env("CREDENTIALS_IDEMPOTENCY_TTL"), msgspec.Meta(ge=60, le=30 * _DAY)] = _DAY
    """Seconds a response is kept for its key: a repeat within it answers that response; the purge removes older
    ones."""


class TestingSettings(Section, frozen=True, kw_only=True):
    """Hooks for the crash-consistency tests; refused outside dev mode."""

    fault_point: Annotated[str | None, Env("CREDENTIALS_TEST_FAULT_POINT")] = None
    """A step of a write (``service.faults.POINTS``, e.g. ``create.after_vault_write``) at which the process kills
    itself with SIGKILL. Tests only: requires ``CREDENTIALS_DEV_MODE=true``."""

    def __post_init__(self) -> None:
        from service.faults import POINTS

        if self.fault_point is not None and self.fault_point not in POINTS:
            raise ConfigError(f"CREDENTIALS_TEST_FAULT_POINT={self.fault_point!r} is not one of {', '.join(POINTS)}")


class Settings(Section, frozen=True, kw_only=True):
    """Everything the service is configured with (the README lists every variable)."""

    database: DatabaseSettings
    vault: VaultSettings
    http: HttpSettings = HttpSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    jwt: JwtSettings = JwtSettings()
    oauth: OAuthSettings = OAuthSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    testing: TestingSettings = TestingSettings()
    dev_mode: Annotated[bool, Env("CREDENTIALS_DEV_MODE")] = False
    """Allows placeholder and root tokens; never in production."""
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], Env("CREDENTIALS_LOG_LEVEL")] = "INFO"
    """How much the service logs."""

    def __post_init__(self) -> None:
        if self.dev_mode:
            return
        if self.testing.fault_point is not None:
            raise ConfigError("CREDENTIALS_TEST_FAULT_POINT is for tests only; it needs CREDENTIALS_DEV_MODE=true")
        if self.vault.token in _PLACEHOLDER_TOKENS:
            raise ConfigError("VAULT_TOKEN is a placeholder; set a real token or CREDENTIALS_DEV_MODE=true")
        secret = self.jwt.hs256_secret
        if secret is not None and secret.lower() in _PLACEHOLDER_JWT_SECRETS:
            raise ConfigError(
                "CREDENTIALS_JWT_HS256_SECRET is a placeholder; set a real secret or CREDENTIALS_DEV_MODE=true"
            )


def variables(section: type[Section] = Settings) -> list[Env]:
    """Every environment variable ``section`` reads, in declaration order."""
    found: list[Env] = []
    for name, env in _envs(section).items():
        if env is None:
            found.extend(variables(_section_type(section, name)))
        else:
            found.append(env)
    return found


# -- the loader --------------------------------------------------------------------------------------------------

_BOOLEANS = {"yes": "true", "on": "true", "no": "false", "off": "false"}


def _envs(section: type[Section]) -> dict[str, Env | None]:
    """Each field's ``Env``, or None for a nested section."""
    hints = typing.get_type_hints(section, include_extras=True)
    return {
        name: next((m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Env)), None)
        for name in section.__struct_fields__
    }


def _section_type(section: type[Section], name: str) -> type[Section]:
    hint = typing.get_type_hints(section)[name]
    if not (isinstance(hint, type) and issubclass(hint, Section)):
        raise TypeError(f"{section.__name__}.{name} names no environment variable and is no section")
    return hint


def _read(section: type[Section], env: Mapping[str, str], path: str, where: dict[str, tuple[Env, str | None]]) -> Any:
    """The raw strings for ``section`` (nested sections as dicts); ``where`` maps each field's path to its variable
    and raw value, for the error messages."""
    raw: dict[str, Any] = {}
    for name, spec in _envs(section).items():
        if spec is None:
            raw[name] = _read(_section_type(section, name), env, f"{path}.{name}", where)
            continue
        value = _value(spec, env)
        where[f"{path}.{name}"] = (spec, value)
        if value is None:
            continue
        hint = typing.get_type_hints(section)[name]
        raw[name] = _BOOLEANS.get(value.strip().lower(), value) if hint is bool else value
    return raw


def _value(spec: Env, env: Mapping[str, str]) -> str | None:
    """The variable's value (an empty one counts as unset), or the content of the file ``<name>_FILE`` names."""
    value = env.get(spec.name) or None
    path = env.get(f"{spec.name}_FILE") if spec.file else None
    if not path:
        return value
    if value is not None:
        raise ConfigError(f"{spec.name} and {spec.name}_FILE are both set; set one of them")
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        raise ConfigError(f"{spec.name}_FILE={path!r} cannot be read: {exc.strerror}") from None


_AT = re.compile(r" - at `(?P<path>[^`]+)`$")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_WRONG_TYPE = re.compile(r"Expected `(?P<want>[^`]+)`, got `")
_NAMES = {"int": "int", "float": "number", "bool": "bool (true or false)", "str": "string"}


def _explain(message: str, section: type[Section], where: dict[str, tuple[Env, str | None]]) -> str:
    """One line for a msgspec refusal: the variable, the value, and what is expected."""
    at = _AT.search(message)
    path = at.group("path") if at else "$"
    text = message[: at.start()] if at else message
    missing = _MISSING.match(text)
    if missing:
        spec, _ = where[f"{path}.{missing.group('field')}"]
        return f"{spec.name} is required" + (f" (e.g. {spec.example})" if spec.example else "")
    if path not in where:
        return text
    spec, value = where[path]
    shown = f"{spec.name}={value!r}"
    wrong = _WRONG_TYPE.match(text)
    if wrong:
        want = next((t for t in wrong.group("want").split(" | ") if t != "null"), "value")
        return f"{shown} is not a valid {_NAMES.get(want, want)}"
    if text.startswith("Invalid enum value"):
        return f"{shown} is not one of {', '.join(_choices(section, path))}"
    info = _field_type(section, path)
    if isinstance(info, msgspec.inspect.StrType):
        return f"{shown} is invalid: " + ("a claim name or a dotted path" if info.pattern else "it must not be empty")
    bounds = _bounds(info)
    if bounds:
        return f"{shown} is out of range: must be {bounds}"
    return f"{shown}: {text}"


def _field_type(section: type[Section], path: str) -> Any:
    *sections, name = path.removeprefix("$.").split(".")
    for part in sections:
        section = _section_type(section, part)
    return msgspec.inspect.type_info(section).fields[section.__struct_fields__.index(name)].type  # type: ignore[attr-defined]


def _choices(section: type[Section], path: str) -> list[str]:
    info = _field_type(section, path)
    return [str(v) for v in getattr(info, "values", ())]


def _bounds(info: Any) -> str | None:
    low = info.ge if getattr(info, "ge", None) is not None else getattr(info, "gt", None)
    high = getattr(info, "le", None)
    above = "greater than" if getattr(info, "gt", None) is not None else "at least"
    if low is not None and high is not None and above == "at least":
        return f"between {_number(low)} and {_number(high)}"
    parts = [f"{above} {_number(low)}"] if low is not None else []
    parts += [f"at most {_number(high)}"] if high is not None else []
    return " and ".join(parts) or None


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"
