"""Settings: one frozen object built from the environment (the only module that reads ``os.environ``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path


class ConfigError(Exception):
    """A setting is missing or has a value the service refuses to run with."""


# Values that only make sense on a developer's machine; refused outside dev mode.
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


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the service is configured with. Every field maps to one environment variable (README table)."""

    database_url: str
    """``DATABASE_URL``: Postgres DSN for the metadata, e.g. ``postgresql://user@127.0.0.1:5432/credentials``."""

    vault_addr: str
    """``VAULT_ADDR``: base URL of Vault or OpenBao, e.g. ``http://127.0.0.1:8200``."""

    vault_token: str | None = field(default=None, repr=False)
    """``VAULT_TOKEN``: a Vault token. Required unless AppRole is configured (AppRole wins when both are set).
    A root token is accepted only in dev mode."""

    vault_role_id: str | None = field(default=None, repr=False)
    """``VAULT_ROLE_ID`` (or ``VAULT_ROLE_ID_FILE``): AppRole role id, used with ``VAULT_SECRET_ID``."""

    vault_secret_id: str | None = field(default=None, repr=False)
    """``VAULT_SECRET_ID`` (or ``VAULT_SECRET_ID_FILE``): AppRole secret id. The service logs in at start-up, renews
    its token at 2/3 of its TTL and logs in again when renewal reaches the role's max TTL or the token is refused."""

    vault_secret_id_file: str | None = None
    """``VAULT_SECRET_ID_FILE``: set when the secret id comes from a file; the service reads the file again before
    each AppRole login, so a secret id rotated in place is picked up without a restart."""

    vault_approle_mount: str = "approle"
    """``CREDENTIALS_VAULT_APPROLE_MOUNT``: mount path of the AppRole auth method the service logs in with."""

    dev_mode: bool = False
    """``CREDENTIALS_DEV_MODE``: allows placeholder tokens and root tokens; never in production."""

    transit_mount: str = "transit"
    """``CREDENTIALS_TRANSIT_MOUNT``: mount path of the transit engine."""

    transit_key: str = "credentials"
    """``CREDENTIALS_TRANSIT_KEY``: name of the derived transit key that encrypts every secret."""

    kv_mount: str = "credentials"
    """``CREDENTIALS_KV_MOUNT``: mount path of the KV v2 engine that holds the ciphertexts."""

    vault_workers: int = 32
    """``CREDENTIALS_VAULT_WORKERS``: threads running Vault calls; also the size of the HTTP pool to Vault."""

    vault_timeout: float = 5.0
    """``CREDENTIALS_VAULT_TIMEOUT``: seconds before one Vault call is given up (answers 503)."""

    db_pool_min: int = 2
    """``CREDENTIALS_DB_POOL_MIN``: connections the Postgres pool keeps open."""

    db_pool_max: int = 32
    """``CREDENTIALS_DB_POOL_MAX``: most connections the Postgres pool opens."""

    max_body_bytes: int = 256 * 1024
    """``CREDENTIALS_MAX_BODY_BYTES``: request bodies larger than this answer 413."""

    retry_after_seconds: int = 5
    """``CREDENTIALS_RETRY_AFTER``: the ``Retry-After`` sent with 503 when a backend is unavailable."""

    max_versions: int = 10
    """``CREDENTIALS_MAX_VERSIONS``: KV versions kept per credential; older ones are destroyed by Vault."""

    delete_retention_seconds: int = 7 * 24 * 3600
    """``CREDENTIALS_DELETE_RETENTION``: seconds a deleted credential can be restored before its secret is
    destroyed (0: destroyed at once, as Mielto's delete)."""

    purge_interval_seconds: int = 3600
    """``CREDENTIALS_PURGE_INTERVAL``: seconds between the service's own purges of expired deletions (0: never;
    ``credctl purge`` from cron instead)."""

    list_exact_count_limit: int = 10_000
    """``CREDENTIALS_LIST_EXACT_COUNT_LIMIT``: the list's ``total`` is exact up to this many matching credentials
    and the planner's estimate beyond it, so a page of a huge workspace does not cost a full count."""

    log_level: str = "INFO"
    """``CREDENTIALS_LOG_LEVEL``: ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``."""

    jwt_hs256_secret: str | None = field(default=None, repr=False)
    """``CREDENTIALS_JWT_HS256_SECRET`` (or ``_FILE``): the shared secret of HS256 user tokens (Supabase's "JWT
    secret"); at least 32 bytes. Unset: HS256 tokens are refused."""

    jwt_public_keys_file: str | None = None
    """``CREDENTIALS_JWT_PUBLIC_KEYS_FILE``: a PEM file (public keys or certificates) or a JWKS JSON file with the
    RS256/ES256 keys that sign user tokens. Unset: RS256/ES256 tokens are refused."""

    jwt_issuer: str | None = None
    """``CREDENTIALS_JWT_ISSUER``: when set, a user token's ``iss`` must equal it."""

    jwt_audience: str | None = None
    """``CREDENTIALS_JWT_AUDIENCE``: when set, a user token's ``aud`` must contain it (Supabase: ``authenticated``);
    when unset, a token that carries an ``aud`` is refused."""

    jwt_workspaces_claim: str = "workspaces"
    """``CREDENTIALS_JWT_WORKSPACES_CLAIM``: the claim (a dotted path, e.g. ``app_metadata.workspaces``) listing the
    user's workspaces and roles."""

    jwt_leeway_seconds: int = 30
    """``CREDENTIALS_JWT_LEEWAY``: clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds."""
    oauth_refresh_skew_seconds: int = 60
    """``CREDENTIALS_OAUTH_REFRESH_SKEW``: reveal refreshes a refreshable credential whose access token expires
    within this many seconds (or has expired)."""

    oauth_proactive_window_seconds: int = 300
    """``CREDENTIALS_OAUTH_PROACTIVE_WINDOW``: the background refresh (and ``credctl refresh-due``) refreshes
    tokens expiring within this many seconds. Keep it below the providers' token lifetimes."""

    oauth_proactive_interval_seconds: int = 60
    """``CREDENTIALS_OAUTH_PROACTIVE_INTERVAL``: seconds between background refresh passes, jittered; each pass
    spreads its refreshes over up to half of it (0: no background refresh; ``credctl refresh-due`` from cron)."""

    oauth_allow_loopback: bool = False
    """``CREDENTIALS_OAUTH_ALLOW_LOOPBACK``: allow token endpoints on loopback addresses, over plain http too
    (tests and development only)."""

    oauth_allow_private: bool = False
    """``CREDENTIALS_OAUTH_ALLOW_PRIVATE``: allow token endpoints on private and link-local addresses (an
    identity provider inside your network). Cloud metadata addresses are refused regardless."""

    oauth_timeout_seconds: float = 10.0
    """``CREDENTIALS_OAUTH_TIMEOUT``: deadline of one call to a token endpoint (resolve, connect, send, read)."""

    oauth_max_attempts: int = 3
    """``CREDENTIALS_OAUTH_MAX_ATTEMPTS``: calls made for one refresh when the endpoint times out, cannot be
    reached or answers 5xx/429; the refresh then answers 502."""

    oauth_retry_backoff_seconds: float = 0.5
    """``CREDENTIALS_OAUTH_RETRY_BACKOFF``: pause before the second attempt, doubled for each later one
    (jittered, at most 5 s)."""

    oauth_max_response_bytes: int = 64 * 1024
    """``CREDENTIALS_OAUTH_MAX_RESPONSE_BYTES``: a token endpoint answer larger than this is refused (502)."""

    def __post_init__(self) -> None:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is required (e.g. postgresql://postgres@127.0.0.1:5432/credentials)")
        if not self.vault_addr:
            raise ConfigError("VAULT_ADDR is required (e.g. http://127.0.0.1:8200)")
        has_approle = bool(self.vault_role_id and self.vault_secret_id)
        if not self.vault_token and not has_approle:
            raise ConfigError("set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole login")
        if self.vault_token in _PLACEHOLDER_TOKENS and not self.dev_mode:
            raise ConfigError("VAULT_TOKEN is a placeholder; set a real token or CREDENTIALS_DEV_MODE=true")
        if self.list_exact_count_limit < 1:
            raise ConfigError("CREDENTIALS_LIST_EXACT_COUNT_LIMIT must be >= 1")
        if self.max_versions < 1 or self.delete_retention_seconds < 0 or self.purge_interval_seconds < 0:
            raise ConfigError("CREDENTIALS_MAX_VERSIONS must be >= 1 and the retention and purge interval >= 0")
        if self.vault_workers < 1 or self.db_pool_max < 1 or self.db_pool_min > self.db_pool_max:
            raise ConfigError("pool sizes must be positive and CREDENTIALS_DB_POOL_MIN <= CREDENTIALS_DB_POOL_MAX")
        self._check_jwt()

    def _check_jwt(self) -> None:
        secret = self.jwt_hs256_secret
        if secret is not None:
            if secret.lower() in _PLACEHOLDER_JWT_SECRETS and not self.dev_mode:
                raise ConfigError(
                    "CREDENTIALS_JWT_HS256_SECRET is a placeholder; set a real secret or CREDENTIALS_DEV_MODE=true"
                )
            if len(secret.encode()) < 32:
                raise ConfigError("CREDENTIALS_JWT_HS256_SECRET must be at least 32 bytes (RFC 7518, section 3.2)")
        if not 0 <= self.jwt_leeway_seconds <= 300:
            raise ConfigError("CREDENTIALS_JWT_LEEWAY must be between 0 and 300 seconds")
        if not self.jwt_workspaces_claim or any(not part for part in self.jwt_workspaces_claim.split(".")):
            raise ConfigError("CREDENTIALS_JWT_WORKSPACES_CLAIM must be a claim name or a dotted path")
        if min(self.oauth_refresh_skew_seconds, self.oauth_proactive_window_seconds) < 0:
            raise ConfigError("CREDENTIALS_OAUTH_REFRESH_SKEW and CREDENTIALS_OAUTH_PROACTIVE_WINDOW must be >= 0")
        if self.oauth_proactive_interval_seconds < 0 or self.oauth_retry_backoff_seconds < 0:
            raise ConfigError("CREDENTIALS_OAUTH_PROACTIVE_INTERVAL and CREDENTIALS_OAUTH_RETRY_BACKOFF must be >= 0")
        if self.oauth_timeout_seconds <= 0 or self.oauth_max_attempts < 1 or self.oauth_max_response_bytes < 1024:
            raise ConfigError(
                "CREDENTIALS_OAUTH_TIMEOUT must be > 0, CREDENTIALS_OAUTH_MAX_ATTEMPTS >= 1 and "
                "CREDENTIALS_OAUTH_MAX_RESPONSE_BYTES >= 1024"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raises ``ConfigError`` naming what is wrong."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "database_url": env.get("DATABASE_URL", ""),
            "vault_addr": env.get("VAULT_ADDR", ""),
            "vault_token": env.get("VAULT_TOKEN") or None,
            "vault_role_id": _value_or_file(env, "VAULT_ROLE_ID"),
            "vault_secret_id": _value_or_file(env, "VAULT_SECRET_ID"),
            "vault_secret_id_file": None if env.get("VAULT_SECRET_ID") else env.get("VAULT_SECRET_ID_FILE") or None,
            "jwt_hs256_secret": _value_or_file(env, "CREDENTIALS_JWT_HS256_SECRET"),
            "jwt_public_keys_file": env.get("CREDENTIALS_JWT_PUBLIC_KEYS_FILE") or None,
            "jwt_issuer": env.get("CREDENTIALS_JWT_ISSUER") or None,
            "jwt_audience": env.get("CREDENTIALS_JWT_AUDIENCE") or None,
        }
        converters: dict[type, Callable[[str], object]] = {bool: _bool, int: int, float: float, str: str}
        for f in fields(cls):
            name = _ENV_NAMES.get(f.name)
            if name is None or name not in env:
                continue
            kind = type(f.default)
            try:
                values[f.name] = converters[kind](env[name])
            except ValueError:
                raise ConfigError(f"{name}={env[name]!r} is not a valid {kind.__name__}") from None
        return cls(**values)  # type: ignore[arg-type]


_ENV_NAMES = {
    "vault_approle_mount": "CREDENTIALS_VAULT_APPROLE_MOUNT",
    "dev_mode": "CREDENTIALS_DEV_MODE",
    "transit_mount": "CREDENTIALS_TRANSIT_MOUNT",
    "transit_key": "CREDENTIALS_TRANSIT_KEY",
    "kv_mount": "CREDENTIALS_KV_MOUNT",
    "vault_workers": "CREDENTIALS_VAULT_WORKERS",
    "vault_timeout": "CREDENTIALS_VAULT_TIMEOUT",
    "db_pool_min": "CREDENTIALS_DB_POOL_MIN",
    "db_pool_max": "CREDENTIALS_DB_POOL_MAX",
    "max_body_bytes": "CREDENTIALS_MAX_BODY_BYTES",
    "retry_after_seconds": "CREDENTIALS_RETRY_AFTER",
    "max_versions": "CREDENTIALS_MAX_VERSIONS",
    "delete_retention_seconds": "CREDENTIALS_DELETE_RETENTION",
    "purge_interval_seconds": "CREDENTIALS_PURGE_INTERVAL",
    "list_exact_count_limit": "CREDENTIALS_LIST_EXACT_COUNT_LIMIT",
    "log_level": "CREDENTIALS_LOG_LEVEL",
    "jwt_workspaces_claim": "CREDENTIALS_JWT_WORKSPACES_CLAIM",
    "jwt_leeway_seconds": "CREDENTIALS_JWT_LEEWAY",
    "oauth_refresh_skew_seconds": "CREDENTIALS_OAUTH_REFRESH_SKEW",
    "oauth_proactive_window_seconds": "CREDENTIALS_OAUTH_PROACTIVE_WINDOW",
    "oauth_proactive_interval_seconds": "CREDENTIALS_OAUTH_PROACTIVE_INTERVAL",
    "oauth_allow_loopback": "CREDENTIALS_OAUTH_ALLOW_LOOPBACK",
    "oauth_allow_private": "CREDENTIALS_OAUTH_ALLOW_PRIVATE",
    "oauth_timeout_seconds": "CREDENTIALS_OAUTH_TIMEOUT",
    "oauth_max_attempts": "CREDENTIALS_OAUTH_MAX_ATTEMPTS",
    "oauth_retry_backoff_seconds": "CREDENTIALS_OAUTH_RETRY_BACKOFF",
    "oauth_max_response_bytes": "CREDENTIALS_OAUTH_MAX_RESPONSE_BYTES",
}


def database_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``DATABASE_URL`` alone, for commands that only touch Postgres (``credctl migrate``, ``api-key``)."""
    env = os.environ if environ is None else environ
    url = env.get("DATABASE_URL", "")
    if not url:
        raise ConfigError("DATABASE_URL is required (e.g. postgresql://postgres@127.0.0.1:5432/credentials)")
    return url


def vault_admin_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``VAULT_ADDR`` and an operator's ``VAULT_TOKEN``, for ``credctl vault-bootstrap``."""
    env = os.environ if environ is None else environ
    addr, token = env.get("VAULT_ADDR", ""), env.get("VAULT_TOKEN", "")
    if not addr or not token:
        raise ConfigError("vault-bootstrap needs VAULT_ADDR and an operator's VAULT_TOKEN")
    return addr, token


def engine_names_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The transit mount, transit key and KV mount names (with their defaults)."""
    env = os.environ if environ is None else environ
    return {
        name: env.get(_ENV_NAMES[name], str(getattr(Settings, name)))
        for name in ("transit_mount", "transit_key", "kv_mount")
    }


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(raw)


def _value_or_file(env: Mapping[str, str], name: str) -> str | None:
    """``NAME`` itself, or the stripped content of the file named by ``NAME_FILE`` (Docker/K8s secrets)."""
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        raise ConfigError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
