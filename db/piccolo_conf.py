"""Piccolo's configuration module (``PICCOLO_CONF=db.piccolo_conf``).

``DB`` starts unbound; ``db.engine.bind`` replaces it with an engine for the database the caller chose, so the
app, the tests and ``credctl migrate`` never depend on import-time environment variables.
"""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine


class UnboundEngine(PostgresEngine):
    """A placeholder that does not connect: Piccolo's engines check the server version when constructed."""

    async def check_version(self) -> None:
        return None

    async def prep_database(self) -> None:
        return None


DB: PostgresEngine = UnboundEngine(config={"dsn": "postgresql://unbound.invalid/credentials"})

APP_REGISTRY = AppRegistry(apps=["db.piccolo_app"])
