"""The outbox of events, webhook subscriptions and their deliveries, and the expiry notices already sent."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.tables import Credential

ID = "2026-12-01T15:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "events outbox, webhooks, webhook deliveries, credential expiry notices"

FORWARDS = [
    # The outbox: one row per change, written in the transaction of the change. Never a secret in `payload`.
    """CREATE TABLE event (
        id uuid PRIMARY KEY,
        workspace_id varchar(255) NOT NULL,
        type varchar(64) NOT NULL,
        credential_id uuid NULL,
        payload jsonb NOT NULL,
        created_at timestamptz NOT NULL
    )""",
    "CREATE INDEX event_credential ON event (credential_id, created_at) WHERE credential_id IS NOT NULL",
    "CREATE INDEX event_created ON event (created_at)",
    # A subscription. The signing secrets are transit ciphertexts (context workspace:<wid>|webhook:<id>).
    """CREATE TABLE webhook (
        id uuid PRIMARY KEY,
        workspace_id varchar(255) NOT NULL,
        url varchar(2048) NOT NULL,
        description varchar(255) NULL,
        event_types varchar(64)[] NOT NULL,
        secret_ciphertext text NOT NULL,
        previous_secret_ciphertext text NULL,
        previous_valid_until timestamptz NULL,
        status varchar(16) NOT NULL DEFAULT 'active',
        status_reason varchar(255) NULL,
        failing_since timestamptz NULL,
        created_by varchar(255) NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    )""",
    "CREATE INDEX webhook_workspace ON webhook (workspace_id) WHERE status = 'active'",
    # One row per (event, subscription): its id is the `webhook-id`, the same at every attempt.
    """CREATE TABLE webhook_delivery (
        id uuid PRIMARY KEY,
        webhook_id uuid NOT NULL REFERENCES webhook (id) ON DELETE CASCADE,
        event_id uuid NOT NULL REFERENCES event (id) ON DELETE CASCADE,
        workspace_id varchar(255) NOT NULL,
        status varchar(16) NOT NULL DEFAULT 'pending',
        attempts integer NOT NULL DEFAULT 0,
        window_start timestamptz NOT NULL,
        next_attempt_at timestamptz NOT NULL,
        lease_until timestamptz NULL,
        last_attempt_at timestamptz NULL,
        last_status_code integer NULL,
        last_error varchar(255) NULL,
        created_at timestamptz NOT NULL,
        delivered_at timestamptz NULL
    )""",
    "CREATE INDEX webhook_delivery_due ON webhook_delivery (next_attempt_at) WHERE status = 'pending'",
    "CREATE INDEX webhook_delivery_of ON webhook_delivery (webhook_id, created_at DESC)",
    "CREATE INDEX webhook_delivery_event ON webhook_delivery (event_id)",
    # The primary key is what makes an expiry warning fire once per credential, lead time and expiry, whichever
    # instance sees it first: the others' inserts conflict and do nothing.
    """CREATE TABLE credential_expiry_notice (
        credential_id uuid NOT NULL,
        lead_seconds integer NOT NULL,
        expires_at timestamptz NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (credential_id, lead_seconds, expires_at)
    )""",
]
BACKWARDS = [
    "DROP TABLE IF EXISTS credential_expiry_notice",
    "DROP TABLE IF EXISTS webhook_delivery",
    "DROP TABLE IF EXISTS webhook",
    "DROP TABLE IF EXISTS event",
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
