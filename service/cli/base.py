"""The ``credctl`` command group and what its commands share: reading settings, failing with one line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

import click

from service.config import ConfigError


@click.group()
@click.version_option(package_name="credentials-service", prog_name="credctl", help="show the version and exit")
def main() -> None:
    """The credentials service: secrets in Vault, metadata in Postgres, Mielto's Credentials API."""


def fail(message: str) -> NoReturn:
    click.echo(f"credctl: {message}", err=True)
    sys.exit(2)


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """A setting that is missing or wrong ends the command with one line naming it."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc))
