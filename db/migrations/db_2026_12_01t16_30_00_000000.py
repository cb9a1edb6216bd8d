"""Idempotency-Key: one row per (workspace, principal, key) with the request's fingerprint and its response."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.tables import Credential

ID = "2026-12-01T16:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "idempotency keys of create, refresh, restore and version restore"

FORWARDS = [
    """
    CREATE TABLE idempotency_key (
        workspace_id VARCHAR(255) NOT NULL,
        principal VARCHAR(255) NOT NULL,
        key VARCHAR(255) NOT NULL,
        fingerprint VARCHAR(64) NOT NULL,
        status_code INTEGER,
        response TEXT,
        etag VARCHAR(128),
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (workspace_id, principal, key)
    )
    """,
    "COMMENT ON TABLE idempotency_key IS 'Responses of requests sent with an Idempotency-Key (metadata only: no "
    "secret); fingerprint is a Vault transit HMAC of the request, never the body'",
    "CREATE INDEX idempotency_key_created ON idempotency_key (created_at)",
]
BACKWARDS = ["DROP TABLE IF EXISTS idempotency_key"]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="db", description=DESCRIPTION)

    async def create_table() -> None:
        for statement in FORWARDS:
            await Credential.raw(statement)

    async def drop_table() -> None:
        for statement in BACKWARDS:
            await Credential.raw(statement)

    manager.add_raw(create_table)
    manager.add_raw_backwards(drop_table)
    return manager
