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
import ssl
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from limits import parse_many

from vault.auth import AppRoleLogin
from vault.nodes import parse_addrs


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

    url: Annotated[
        str, Env("DATABASE_URL", secret=True, file=True, example="postgresql://postgres@127.0.0.1:5432/credentials")
    ]
    """Postgres DSN for the metadata."""
    pool_min: Annotated[int, Env("CREDENTIALS_DB_POOL_MIN"), msgspec.Meta(ge=0, le=1000)] = 2
    """Connections the pool keeps open."""
    pool_max: Annotated[int, Env("CREDENTIALS_DB_POOL_MAX"), msgspec.Meta(ge=1, le=1000)] = 32
    """Most connections the pool opens."""
    connect_timeout: Annotated[float, Env("CREDENTIALS_DB_CONNECT_TIMEOUT"), msgspec.Meta(gt=0, le=300)] = 10.0
    """Seconds to open one Postgres connection (TCP, TLS, authentication) before giving up: a server that accepts
    connections but never answers fails the start-up (and every ``credctl`` command) after this long."""

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
    # -- HA: the nodes of an OpenBao/Vault raft cluster (issue 13) --
    cluster_addrs: Annotated[
        str | None, Env("CREDENTIALS_VAULT_ADDRS", example="http://bao1:8200,http://bao2:8200")
    ] = None
    """Comma-separated URLs of the other nodes of the Vault cluster. Calls go to the active node; a sealed, standby-
    refusing or unreachable node is skipped, and a call lost in flight is sent to another node once when repeating it
    is safe. ``VAULT_ADDR`` is the first node (and may be the only one)."""
    failover_seconds: Annotated[float, Env("CREDENTIALS_VAULT_FAILOVER_SECONDS"), msgspec.Meta(ge=0, le=120)] = 10.0
    """How long a call waits for a node able to serve it (a leader election) before it answers 503."""
    cacert: Annotated[str | None, Env("VAULT_CACERT", example="/run/secrets/openbao_ca")] = None
    """Path of a PEM file with the CA certificate(s) that Vault's TLS certificate must chain to, for every connection
    to Vault (hvac, the aiohttp fast path, snapshots). Unset: an ``https`` address is checked against the system's
    trust store. Read and checked at start-up."""

    @property
    def addrs(self) -> tuple[str, ...]:
        """Every node: ``VAULT_ADDR`` first, then ``CREDENTIALS_VAULT_ADDRS``."""
        return parse_addrs(self.addr, self.cluster_addrs)

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

    @staticmethod
    def token_in_env(environ: Mapping[str, str] | None = None) -> bool:
        """Whether ``VAULT_TOKEN`` is set (not empty): ``credctl vault-bootstrap`` needs an operator's token, and
        without one only checks that an earlier bootstrap's AppRole files still log in."""
        return bool((os.environ if environ is None else environ).get("VAULT_TOKEN"))

    @classmethod
    def with_approle_files(cls, approle_dir: Path, environ: Mapping[str, str] | None = None) -> VaultSettings:
        """These settings from ``environ`` (default: ``os.environ``), logging in with the ``role_id`` and
        ``secret_id`` files that ``vault-bootstrap --approle-out`` wrote to ``approle_dir`` instead of any token or
        AppRole setting there."""
        env = {
            name: value
            for name, value in (os.environ if environ is None else environ).items()
            if name.removesuffix("_FILE") not in {"VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID"}
        }
        env["VAULT_ROLE_ID_FILE"] = str(approle_dir / "role_id")
        env["VAULT_SECRET_ID_FILE"] = str(approle_dir / "secret_id")
        return cls.from_env(env)

    def __post_init__(self) -> None:
        try:
            parse_addrs(self.addr, self.cluster_addrs)
        except ValueError as exc:
            raise ConfigError(f"VAULT_ADDR / CREDENTIALS_VAULT_ADDRS: {exc}") from None
        if not self.token and not self.uses_approle:
            raise ConfigError("set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole login")
        if self.cacert is not None:
            check_ca_bundle(self.cacert)


def check_ca_bundle(path: str) -> None:
    """Refuse a ``VAULT_CACERT`` that cannot be read, holds no PEM certificate, or that OpenSSL cannot load."""
    fix = "set it to the PEM file of the CA that signed Vault's certificate (just compose-certs writes one)"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise ConfigError(f"VAULT_CACERT={path!r} cannot be read ({exc.strerror}); {fix}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"VAULT_CACERT={path!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----); {fix}")
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"VAULT_CACERT={path!r} is not a valid PEM CA bundle ({exc.reason or 'OpenSSL cannot load it'}); {fix}"
        ) from None


class HttpSettings(Section, frozen=True, kw_only=True):
    """What the HTTP API accepts and answers."""

    max_body_bytes: Annotated[int, Env("CREDENTIALS_MAX_BODY_BYTES"), msgspec.Meta(ge=1024, le=64 * 1024 * 1024)] = (
        256 * 1024
    )
    """Request bodies larger than this answer 413."""
    retry_after_seconds: Annotated[int, Env("CREDENTIALS_RETRY_AFTER"), msgspec.Meta(ge=1, le=3600)] = 5
    """The ``Retry-After`` sent with 503 when a backend is unavailable."""
    workers: Annotated[int, Env("CREDENTIALS_WORKERS"), msgspec.Meta(ge=1, le=64)] = 1
    """Worker processes of ``credctl serve`` (``--workers`` overrides). One process runs one event loop on one core:
    in production set it to the cores the service may use (each worker has its own pools, key cache and batcher;
    size ``CREDENTIALS_DB_POOL_MAX`` x workers within Postgres's ``max_connections``)."""
    fast_routes: Annotated[bool, Env("CREDENTIALS_FAST_ROUTES")] = True
    """Get, update and delete of one credential answered without Litestar's per-request machinery
    (``service.hot_routes``: the same checks and answers for less CPU); false hands them to Litestar too."""


class LifecycleSettings(Section, frozen=True, kw_only=True):
    """How long secrets, versions and deletions are kept."""

    max_versions: Annotated[int, Env("CREDENTIALS_MAX_VERSIONS"), msgspec.Meta(ge=1, le=100)] = 10
    """KV versions kept per credential; older ones are destroyed by Vault. It is the KV mount's config, written by
    ``credctl vault-bootstrap`` (so a create costs no per-key metadata call): run the bootstrap after changing it."""
    delete_retention_seconds: Annotated[
        int, Env("CREDENTIALS_DELETE_RETENTION"), msgspec.Meta(ge=0, le=3650 * _DAY)
    ] = 7 * _DAY
    """Seconds a deleted credential can be restored before its secret is destroyed (0: destroyed at once, as
    Mielto's delete)."""
    purge_interval_seconds: Annotated[int, Env("CREDENTIALS_PURGE_INTERVAL"), msgspec.Meta(ge=0, le=30 * _DAY)] = 3600
    """Seconds between the service's own purges of expired deletions (0: never; ``credctl purge`` from cron)."""
    list_exact_count_limit: Annotated[
        int, Env("CREDENTIALS_LIST_EXACT_COUNT_LIMIT"), msgspec.Meta(ge=1, le=10_000_000)
    ] = 1_000
    """The list's ``total`` is exact up to this many matching credentials and the planner's estimate beyond it, so
    a page of a huge workspace does not cost a full count: finding the 1,001st match of a search that matches one
    row in ten reads about 10,000 rows, at any size of workspace (10,000 made a search at a million credentials 3.4
    times slower than at ten thousand)."""


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


class TelemetrySettings(Section, frozen=True, kw_only=True):
    """Metrics and traces (logs: ``CREDENTIALS_LOG_LEVEL`` and ``CREDENTIALS_LOG_FORMAT``)."""

    metrics: Annotated[bool, Env("CREDENTIALS_METRICS")] = True
    """Serve Prometheus metrics at ``/metrics``."""
    metrics_token: Annotated[str | None, Env("CREDENTIALS_METRICS_TOKEN", secret=True, file=True)] = None
    """When set, ``/metrics`` answers only ``Authorization: Bearer <this>`` (else it is open: it holds no secret)."""
    access_log: Annotated[bool, Env("CREDENTIALS_ACCESS_LOG")] = True
    """Write one log line per HTTP request (method, path, status, duration, request id, actor, workspace)."""
    traces: Annotated[bool, Env("CREDENTIALS_OTEL_TRACES")] = False
    """Emit OpenTelemetry traces (needs the ``telemetry`` extra): OTLP when its exporter is installed (configured by
    the ``OTEL_EXPORTER_OTLP_*`` variables), else the console."""


class HardeningSettings(Section, frozen=True, kw_only=True):
    """Limits against hostile clients: what the HTTP server accepts before the app sees a request, failed
    authentication, and API keys minted by users (README, "Hardening")."""

    max_header_bytes: Annotated[
        int, Env("CREDENTIALS_HTTP_MAX_HEADER_BYTES"), msgspec.Meta(ge=1024, le=1024 * 1024)
    ] = 16 * 1024
    """Request line and headers larger than this answer 431 and the connection is closed."""
    header_timeout_seconds: Annotated[float, Env("CREDENTIALS_HTTP_HEADER_TIMEOUT"), msgspec.Meta(gt=0, le=300)] = 10.0
    """A connection whose request line and headers are not complete this many seconds after it opened (or after
    its next request began) gets 408 and is closed (slowloris)."""
    max_connections: Annotated[int, Env("CREDENTIALS_HTTP_MAX_CONNECTIONS"), msgspec.Meta(ge=1, le=1_000_000)] = 1000
    """Open connections per process; beyond it a new connection gets 503 and is closed (and requests beyond it in
    flight answer 503)."""
    auth_failures_per_address: Annotated[
        str, Env("CREDENTIALS_AUTH_FAILURES_PER_ADDRESS"), msgspec.Meta(pattern=r"\S")
    ] = "30/minute"
    """Failed authentications allowed per client address (``limits`` notation: ``30/minute``, ``100/hour``);
    beyond it every request from that address answers 429 with ``Retry-After`` until the window passes."""
    auth_failures_per_key: Annotated[str, Env("CREDENTIALS_AUTH_FAILURES_PER_KEY"), msgspec.Meta(pattern=r"\S")] = (
        "10/minute"
    )
    """Failed authentications allowed per API key prefix (``ck_<lookup>``), from any address; beyond it that key
    answers 429 with ``Retry-After`` until the window passes."""
    trust_forwarded_for: Annotated[bool, Env("CREDENTIALS_TRUST_X_FORWARDED_FOR")] = False
    """Take the client address from the last ``X-Forwarded-For`` entry (behind one reverse proxy you run)."""
    user_api_key_ttl_seconds: Annotated[
        int, Env("CREDENTIALS_USER_API_KEY_TTL"), msgspec.Meta(ge=0, le=3650 * _DAY)
    ] = 0
    """API keys a user creates over the API without ``expires_at`` expire this many seconds later (0: never). A key
    outlives its creator's membership of the workspace: set this to bound how long."""

    def __post_init__(self) -> None:
        for name, value in (
            ("CREDENTIALS_AUTH_FAILURES_PER_ADDRESS", self.auth_failures_per_address),
            ("CREDENTIALS_AUTH_FAILURES_PER_KEY", self.auth_failures_per_key),
        ):
            try:
                parse_many(value)
            except ValueError:
                raise ConfigError(f"{name}={value!r} is not a rate such as '30/minute'") from None


class ProxySettings(Section, frozen=True, kw_only=True):
    """The credential proxy, grants and provider checks. Upstreams obey the OAuth egress rules
    (``CREDENTIALS_OAUTH_ALLOW_LOOPBACK``/``_PRIVATE``)."""

    timeout_seconds: Annotated[float, Env("CREDENTIALS_PROXY_TIMEOUT"), msgspec.Meta(gt=0, le=600)] = 30.0
    """Deadline for the upstream's answer to begin (504 past it), and for each read or write while streaming."""
    max_request_bytes: Annotated[
        int, Env("CREDENTIALS_PROXY_MAX_REQUEST_BYTES"), msgspec.Meta(ge=1024, le=1024 * 1024 * 1024)
    ] = 10 * 1024 * 1024
    """A proxied request body larger than this answers 413."""
    max_response_bytes: Annotated[
        int, Env("CREDENTIALS_PROXY_MAX_RESPONSE_BYTES"), msgspec.Meta(ge=1024, le=4 * 1024 * 1024 * 1024)
    ] = 50 * 1024 * 1024
    """An upstream answer declared larger than this answers 502; one that grows past it while streaming is cut."""
    max_connections: Annotated[int, Env("CREDENTIALS_PROXY_MAX_CONNECTIONS"), msgspec.Meta(ge=1, le=10_000)] = 100
    """Connections kept open to each upstream host."""
    grant_default_ttl_seconds: Annotated[int, Env("CREDENTIALS_GRANT_DEFAULT_TTL"), msgspec.Meta(ge=1, le=_DAY)] = 900
    """A grant's lifetime when the request names none."""
    grant_max_ttl_seconds: Annotated[int, Env("CREDENTIALS_GRANT_MAX_TTL"), msgspec.Meta(ge=1, le=30 * _DAY)] = _DAY
    """The longest lifetime a grant may be given (``ttl_seconds`` above it answers 422)."""
    check_interval_seconds: Annotated[int, Env("CREDENTIALS_CHECK_INTERVAL"), msgspec.Meta(ge=0, le=30 * _DAY)] = 0
    """Provider checks: a credential with ``check`` settings is checked again once its last check is this old, by a
    job of the service every interval/10 (at least 1 s; each due check is claimed in Postgres, so of several
    instances one runs it) and by ``credctl check --due`` (0: no job of the service)."""

    def __post_init__(self) -> None:
        if self.grant_default_ttl_seconds > self.grant_max_ttl_seconds:
            raise ConfigError(
                f"CREDENTIALS_GRANT_DEFAULT_TTL={self.grant_default_ttl_seconds} is above "
                f"CREDENTIALS_GRANT_MAX_TTL={self.grant_max_ttl_seconds}"
            )


class WebhookSettings(Section, frozen=True, kw_only=True):
    """Webhook delivery: the dispatcher every instance runs, its retries, and when an endpoint is given up."""

    dispatch_interval_seconds: Annotated[
        float, Env("CREDENTIALS_WEBHOOKS_DISPATCH_INTERVAL"), msgspec.Meta(ge=0, le=3600)
    ] = 1.0
    """Seconds between the dispatcher's polls for due deliveries when it found none (0: this instance delivers
    nothing; another instance, or none, does)."""
    concurrency: Annotated[int, Env("CREDENTIALS_WEBHOOKS_CONCURRENCY"), msgspec.Meta(ge=1, le=256)] = 16
    """Deliveries one instance sends at once (and claims per poll)."""
    timeout_seconds: Annotated[float, Env("CREDENTIALS_WEBHOOKS_TIMEOUT"), msgspec.Meta(gt=0, le=120)] = 10.0
    """Deadline of one delivery attempt; anything but a 2xx within it is a failure."""
    lease_seconds: Annotated[float, Env("CREDENTIALS_WEBHOOKS_LEASE"), msgspec.Meta(gt=0, le=3600)] = 60.0
    """A claimed delivery is another instance's to retry after this long (its instance died mid-send); keep it
    above the timeout."""
    retry_base_seconds: Annotated[float, Env("CREDENTIALS_WEBHOOKS_RETRY_BASE"), msgspec.Meta(gt=0, le=3600)] = 5.0
    """Pause after the first failed attempt; doubled after each later one (jittered +-50%), at most
    ``CREDENTIALS_WEBHOOKS_RETRY_MAX``."""
    retry_max_seconds: Annotated[float, Env("CREDENTIALS_WEBHOOKS_RETRY_MAX"), msgspec.Meta(gt=0, le=_DAY)] = 3600.0
    """The longest pause between two attempts."""
    retry_for_seconds: Annotated[int, Env("CREDENTIALS_WEBHOOKS_RETRY_FOR"), msgspec.Meta(ge=1, le=30 * _DAY)] = _DAY
    """A delivery is retried for this long after its event, then marked ``failed`` (it can be retried by hand)."""
    disable_after_seconds: Annotated[
        int, Env("CREDENTIALS_WEBHOOKS_DISABLE_AFTER"), msgspec.Meta(ge=1, le=90 * _DAY)
    ] = 3 * _DAY
    """An endpoint that has failed every attempt for this long is disabled (event ``webhook.disabled``)."""
    secret_grace_seconds: Annotated[int, Env("CREDENTIALS_WEBHOOKS_SECRET_GRACE"), msgspec.Meta(ge=0, le=30 * _DAY)] = (
        _DAY
    )
    """After a secret rotation, deliveries are signed with the old secret too for this long."""
    event_retention_seconds: Annotated[
        int, Env("CREDENTIALS_EVENTS_RETENTION"), msgspec.Meta(ge=3600, le=3650 * _DAY)
    ] = 30 * _DAY
    """Events (and their delivery records) are kept this long, once no delivery waits for them."""

    def __post_init__(self) -> None:
        if self.lease_seconds <= self.timeout_seconds:
            raise ConfigError("CREDENTIALS_WEBHOOKS_LEASE must be greater than CREDENTIALS_WEBHOOKS_TIMEOUT")


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": _DAY}


class ExpirySettings(Section, frozen=True, kw_only=True):
    """Expiry warnings (``credential.expiring``, ``credential.expired``)."""

    lead_times: Annotated[str, Env("CREDENTIALS_EXPIRY_LEAD_TIMES", example="7d,1d")] = "7d,1d"
    """How long before ``expires_at`` a ``credential.expiring`` is sent, once per credential and lead time: a
    comma-separated list of durations (``30s``, ``15m``, ``12h``, ``7d``)."""
    interval_seconds: Annotated[float, Env("CREDENTIALS_EXPIRY_INTERVAL"), msgspec.Meta(ge=0, le=_DAY)] = 60.0
    """Seconds between checks for credentials to warn about (0: none in this instance)."""

    def __post_init__(self) -> None:
        self.leads()

    def leads(self) -> list[int]:
        """The lead times in seconds, longest first."""
        found = []
        for part in self.lead_times.split(","):
            match = _DURATION.match(part)
            if match is None or int(match.group(1)) == 0:
                raise ConfigError(
                    f"CREDENTIALS_EXPIRY_LEAD_TIMES={self.lead_times!r} is invalid: a comma-separated list of "
                    "positive durations such as 7d,1d,12h,30m,45s"
                )
            found.append(int(match.group(1)) * _UNITS[match.group(2)])
        return sorted(set(found), reverse=True)


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
    telemetry: TelemetrySettings = TelemetrySettings()
    hardening: HardeningSettings = HardeningSettings()
    proxy: ProxySettings = ProxySettings()
    webhooks: WebhookSettings = WebhookSettings()
    expiry: ExpirySettings = ExpirySettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    testing: TestingSettings = TestingSettings()
    dev_mode: Annotated[bool, Env("CREDENTIALS_DEV_MODE")] = False
    """Allows placeholder and root tokens; never in production."""
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], Env("CREDENTIALS_LOG_LEVEL")] = "INFO"
    """How much the service logs."""
    log_format: Annotated[Literal["text", "json"], Env("CREDENTIALS_LOG_FORMAT")] = "text"
    """``json``: one JSON object per line, each with the request id, actor and workspace of the request it serves."""

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
