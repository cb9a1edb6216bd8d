"""``credctl``: run, migrate, bootstrap and administer the credentials service."""

from service.cli import admin, backup, dev, operations
from service.cli.base import main

__all__ = ["admin", "backup", "dev", "main", "operations"]
