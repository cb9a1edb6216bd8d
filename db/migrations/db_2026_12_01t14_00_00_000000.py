"""The credential proxy: proxy settings on the credential, grants bound to one credential, and the usage record."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.tables import Credential

ID = "2026-12-01T14:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "credential.proxy; credential_grant; credential_usage"

FORWARDS = [
    "ALTER TABLE credential ADD COLUMN proxy JSONB NULL DEFAULT NULL",
    """CREATE TABLE credential_grant (
        id UUID PRIMARY KEY,
        credential_id UUID NOT NULL REFERENCES credential (id) ON DELETE CASCADE,
        workspace_id VARCHAR(255) NOT NULL,
        lookup_id VARCHAR(32) NOT NULL UNIQUE,
        secret_hash VARCHAR(64) NOT NULL,
        label VARCHAR(100) NULL,
        methods VARCHAR(16)[] NULL,
        path_prefixes VARCHAR(512)[] NULL,
        max_uses INTEGER NULL CHECK (max_uses IS NULL OR max_uses > 0),
        uses INTEGER NOT NULL DEFAULT 0 CHECK (max_uses IS NULL OR uses <= max_uses),
        expires_at TIMESTAMPTZ NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        created_by VARCHAR(255) NOT NULL,
        revoked_at TIMESTAMPTZ NULL
    )""",
    "CREATE INDEX credential_grant_page ON credential_grant (credential_id, created_at DESC, id DESC)",
    """CREATE TABLE credential_usage (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        credential_id UUID NOT NULL REFERENCES credential (id) ON DELETE CASCADE,
        workspace_id VARCHAR(255) NOT NULL,
        actor_kind VARCHAR(16) NOT NULL,
        actor_id VARCHAR(255) NOT NULL,
        grant_id UUID NULL,
        method VARCHAR(16) NOT NULL,
        host VARCHAR(255) NOT NULL,
        path_template VARCHAR(512) NOT NULL,
        upstream_status INTEGER NULL,
        outcome VARCHAR(32) NOT NULL,
        request_bytes BIGINT NOT NULL DEFAULT 0,
        response_bytes BIGINT NOT NULL DEFAULT 0,
        duration_ms INTEGER NOT NULL DEFAULT 0,
        request_id VARCHAR(128) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX credential_usage_page ON credential_usage (credential_id, created_at DESC, id DESC)",
]
BACKWARDS = [
    "DROP TABLE IF EXISTS credential_usage",
    "DROP TABLE IF EXISTS credential_grant",
    "ALTER TABLE credential DROP COLUMN IF EXISTS proxy",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="db", description=DESCRIPTION)

    async def create() -> None:
        for statement in FORWARDS:
            await Credential.raw(statement)

    async def drop() -> None:
        for statement in BACKWARDS:
            await Credential.raw(statement)

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
