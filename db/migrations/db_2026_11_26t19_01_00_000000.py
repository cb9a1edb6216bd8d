"""One row per (credential, version); the purge finds soft-deleted rows past their window by time."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.tables import Credential

ID = "2026-11-26T19:01:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "unique credential versions; index for the purge of soft-deleted credentials"

FORWARDS = [
    "CREATE UNIQUE INDEX credential_version_unique ON credential_version (credential_id, version)",
    "CREATE INDEX credential_deleted ON credential (deleted_at) WHERE state = 'deleted'",
]
BACKWARDS = [
    "DROP INDEX IF EXISTS credential_version_unique",
    "DROP INDEX IF EXISTS credential_deleted",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="db", description=DESCRIPTION)

    async def create_indexes() -> None:
        for statement in FORWARDS:
            await Credential.raw(statement)

    async def drop_indexes() -> None:
        for statement in BACKWARDS:
            await Credential.raw(statement)

    manager.add_raw(create_indexes)
    manager.add_raw_backwards(drop_indexes)
    return manager
