"""Piccolo's registration of this app: its tables and where its migrations live."""

import os

from piccolo.conf.apps import AppConfig

from db.tables import ApiKey, Credential, CredentialVersion

APP_CONFIG = AppConfig(
    app_name="db",
    migrations_folder_path=os.path.join(os.path.dirname(__file__), "migrations"),
    table_classes=[Credential, ApiKey, CredentialVersion],
    migration_dependencies=[],
    commands=[],
)
