"""Indexes for every filter the list endpoint offers, scoped to visible rows, newest first; trigram search."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.tables import Credential

ID = "2026-11-26T18:41:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "list indexes: workspace + each filter, newest first; trigram search on label and description"

VISIBLE = "WHERE state = 'active'"
FORWARDS = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX credential_list ON credential (workspace_id, created_at DESC, id DESC) {VISIBLE}",
    f"CREATE INDEX credential_list_auth_type ON credential (workspace_id, auth_type, created_at DESC) {VISIBLE}",
    "CREATE INDEX credential_list_credential_type ON credential "
    f"(workspace_id, credential_type, created_at DESC) {VISIBLE}",
    f"CREATE INDEX credential_list_status ON credential (workspace_id, status, created_at DESC) {VISIBLE}",
    f"CREATE INDEX credential_search_label ON credential USING gin (label gin_trgm_ops) {VISIBLE}",
    f"CREATE INDEX credential_search_description ON credential USING gin (description gin_trgm_ops) {VISIBLE}",
    # The reconciler looks for rows stuck outside 'active'.
    "CREATE INDEX credential_unfinished ON credential (updated_at) WHERE state <> 'active'",
]
BACKWARDS = [
    f"DROP INDEX IF EXISTS {name}"
    for name in (
        "credential_list",
        "credential_list_auth_type",
        "credential_list_credential_type",
        "credential_list_status",
        "credential_search_label",
        "credential_search_description",
        "credential_unfinished",
    )
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
