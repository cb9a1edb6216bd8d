"""credctl's own documentation: every command and option explains itself, ``--version``, the environment in
``serve --help``. Run in process with click's runner: no server is involved."""

from __future__ import annotations

from importlib.metadata import version

import click
import pytest
from click.testing import CliRunner

from service.cli import main
from service.config import variables


def _commands(group: click.Group = main, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


COMMANDS = _commands()


def test_the_walk_reaches_every_command() -> None:
    assert {" ".join(path) for path, _ in COMMANDS} >= {
        "dev", "dev-token", "serve", "migrate", "vault-bootstrap", "api-key", "api-key create", "api-key list",
        "api-key revoke", "purge", "refresh-due", "rotate-key", "reconcile",
    }  # fmt: skip


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_every_command_and_option_has_help(path: tuple[str, ...], command: click.Command) -> None:
    assert (command.help or "").strip(), f"credctl {' '.join(path)} has no help text"
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            assert (parameter.help or "").strip(), f"credctl {' '.join(path)} {parameter.opts[0]} has no help text"
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="credctl")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: credctl {' '.join(path)} ")


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert (result.exit_code, result.output) == (0, f"credctl, version {version('credentials-service')}\n")


def test_serve_help_lists_every_environment_variable_with_what_it_is() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    lines = result.output.split("Environment (see the README's Configuration section):\n", 1)[1].splitlines()
    listed = {line.split()[0]: line for line in lines if line.strip()}
    assert set(listed) == {env.name for env in variables()}
    assert "DATABASE_URL" in listed
    assert listed["VAULT_ROLE_ID"].split()[1:4] == ["(or", "VAULT_ROLE_ID_FILE)", "AppRole"]
    assert all(len(line.split()) > 1 for line in listed.values())
