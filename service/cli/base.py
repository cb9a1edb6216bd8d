"""The ``credctl`` command group and what its commands share: reading settings, failing with one line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

import click

from service.config import ConfigError


class _Commands(click.Group):
    """``credctl``'s group: a backend that cannot be used ends any command with one line and exit status 1, a
    setting that is missing or wrong with one line and status 2 (``config_errors``, for any command that reads its
    settings outside it)."""

    def invoke(self, ctx: click.Context) -> object:
        from service.startup import StartupError

        try:
            return super().invoke(ctx)
        except StartupError as exc:
            click.echo(f"credctl: {exc}", err=True)
            sys.exit(1)
        except ConfigError as exc:
            fail(str(exc))


@click.group(cls=_Commands)
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
