"""Postgres tables. They hold metadata and Vault references only: never a byte of a secret."""

from __future__ import annotations

from piccolo.columns import JSONB, UUID, Array, BigInt, Integer, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class Credential(Table, tablename="credential"):
    """One stored credential: what the API shows, plus where its secret lives in Vault."""

    id = UUID(primary_key=True)
    workspace_id = Varchar(length=255, help_text="Indexed together with each list filter (see the indexes migration).")
    label = Varchar(length=100)
    description = Varchar(length=255, null=True, default=None)
    auth_type = Varchar(length=32)
    credential_type = Varchar(length=32, null=True, default=None)
    credential_scope = Varchar(length=255)
    provider = Varchar(length=255, default="custom")
    user_id = Varchar(length=255, null=True, default=None)
    created_by = Varchar(length=255)
    status = Varchar(
        length=32,
        default="active",
        help_text="Stored status: active, inactive, revoked or error. 'expired' is computed from expires_at.",
    )
    status_reason = Varchar(length=255, null=True, default=None)
    status_changed_at = Timestamptz(null=True, default=None)
    status_changed_by = Varchar(length=255, null=True, default=None)
    expires_at = Timestamptz(null=True, default=None)
    last_used_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    deleted_at = Timestamptz(
        null=True,
        default=None,
        help_text="When a caller deleted it; the secret is destroyed after the retention window.",
    )
    state = Varchar(
        length=16,
        default="pending",
        help_text=(
            "Where the row is in the write protocol: 'pending' until its secret is in Vault, 'active' once the API "
            "shows it, 'deleted' while soft-deleted (restorable), 'deleting' while its secret is destroyed. "
            "Only 'active' rows are visible."
        ),
    )
    kv_version = Integer(default=0, help_text="The KV v2 version of the secret that the API serves (0: none yet).")
    proxy = JSONB(
        null=True,
        default=None,
        help_text="Proxy settings (base_url, methods, prefixes, injection, check and its last outcome); no secret.",
    )


class ApiKey(Table, tablename="api_key"):
    """A workspace API key. The key itself is never stored: only the SHA-256 of its secret part."""

    id = UUID(primary_key=True)
    workspace_id = Varchar(length=255, index=True)
    label = Varchar(length=255, null=True, default=None)
    lookup_id = Varchar(
        length=32, unique=True, help_text="The public part of the key (ck_<lookup_id>_<secret>), used to find the row."
    )
    secret_hash = Varchar(length=64, help_text="Hex SHA-256 of the secret part, compared in constant time.")
    permissions = Array(base_column=Varchar(length=16))
    status = Varchar(
        length=16, default="active", help_text="'active' keys authenticate; 'inactive' and 'revoked' ones answer 401."
    )
    expires_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    created_by = Varchar(
        length=255, default="credctl", help_text="Who made the key: a user's sub, an API key's id, or 'credctl'."
    )
    updated_at = Timestamptz(default=TimestamptzNow())
    revoked_at = Timestamptz(null=True, default=None, help_text="When DELETE /api-keys/{id} revoked it.")


class CredentialVersion(Table, tablename="credential_version"):
    """Who wrote each KV version of a credential's secret, and why (metadata only; the data is in Vault)."""

    id = UUID(primary_key=True)
    credential_id = UUID(index=True)
    version = Integer()
    created_at = Timestamptz(default=TimestamptzNow())
    created_by = Varchar(length=255)
    reason = Varchar(length=32, help_text="create, update, restore, rewrap")
    restored_from = Integer(null=True, default=None)


class CredentialGrant(Table, tablename="credential_grant"):
    """A short-lived token bound to one credential's proxy route. Only the SHA-256 of its secret part is stored."""

    id = UUID(primary_key=True)
    credential_id = UUID(help_text="References credential (ON DELETE CASCADE, see the T14 migration).")
    workspace_id = Varchar(length=255)
    lookup_id = Varchar(length=32, unique=True, help_text="The public part of the token (cg_<lookup_id>_<secret>).")
    secret_hash = Varchar(length=64, help_text="Hex SHA-256 of the secret part, compared in constant time.")
    label = Varchar(length=100, null=True, default=None)
    methods = Array(base_column=Varchar(length=16), null=True, default=None)
    path_prefixes = Array(base_column=Varchar(length=512), null=True, default=None)
    max_uses = Integer(null=True, default=None)
    uses = Integer(default=0, help_text="Uses so far; incremented by one conditional UPDATE, never past max_uses.")
    expires_at = Timestamptz()
    created_at = Timestamptz(default=TimestamptzNow())
    created_by = Varchar(length=255)
    revoked_at = Timestamptz(null=True, default=None)


class CredentialUsage(Table, tablename="credential_usage"):
    """One proxied call: who, what (method, host, path template), the upstream's answer. No header or body."""

    id = UUID(primary_key=True)
    credential_id = UUID(help_text="References credential (ON DELETE CASCADE).")
    workspace_id = Varchar(length=255)
    actor_kind = Varchar(length=16, help_text="api_key, user, grant or system (a provider check).")
    actor_id = Varchar(length=255)
    grant_id = UUID(null=True, default=None)
    method = Varchar(length=16)
    host = Varchar(length=255)
    path_template = Varchar(length=512, help_text="The path with id-like segments replaced by {id}; no query.")
    upstream_status = Integer(null=True, default=None, help_text="None when the upstream gave no answer.")
    outcome = Varchar(length=32, help_text="ok, timeout, unreachable, too_large, refused")
    request_bytes = BigInt(default=0)
    response_bytes = BigInt(default=0)
    duration_ms = Integer(default=0)
    request_id = Varchar(length=128)
    created_at = Timestamptz(default=TimestamptzNow())
