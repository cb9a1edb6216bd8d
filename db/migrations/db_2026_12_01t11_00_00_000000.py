"""Every change to an API key notifies its lookup id, so each instance's in-process key cache drops it."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.tables import ApiKey

ID = "2026-12-01T11:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "notify api_key_changed on every update or delete of an API key (the key caches listen)"

# A trigger rather than a notify in the revoke query: a key changed by any path (the API, credctl, an operator's
# SQL) reaches every instance's cache. The notification is sent at commit, so no instance sees it early.
FORWARDS = [
    """CREATE OR REPLACE FUNCTION api_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('api_key_changed', OLD.lookup_id);
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER api_key_changed AFTER UPDATE OR DELETE ON api_key FOR EACH ROW EXECUTE FUNCTION api_key_changed()",
]
BACKWARDS = [
    "DROP TRIGGER IF EXISTS api_key_changed ON api_key",
    "DROP FUNCTION IF EXISTS api_key_changed()",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="db", description=DESCRIPTION)

    async def create() -> None:
        for statement in FORWARDS:
            await ApiKey.raw(statement)

    async def drop() -> None:
        for statement in BACKWARDS:
            await ApiKey.raw(statement)

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
