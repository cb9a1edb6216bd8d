"""``credctl``: run, migrate, bootstrap and administer the credentials service."""

from service.cli import admin, dev, operations
from service.cli.base import main

__all__ = ["admin", "dev", "main", "operations"]
