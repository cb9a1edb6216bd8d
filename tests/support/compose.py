"""Reading compose.yaml as Compose does (YAML, then ``${...}`` interpolation), for the compose tests."""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "service" / "Dockerfile"
INIT_SCRIPT = ROOT / "vault" / "compose-init.sh"

SERVICES = {"postgres", "openbao", "openbao-init", "bootstrap", "service", "vault", "vault-init"}
# The `ha` profile's services (tests/unit/test_compose_ha.py).
HA_SERVICES = {"openbao-2", "openbao-3", "openbao-ha-unseal", "replica-1", "replica-2", "proxy"}
# The `prod` profile's services: OpenBao with TLS (tests/unit/test_compose.py).
PROD_SERVICES = {"openbao-tls-certs", "openbao-tls", "openbao-tls-init"}
# Where the bootstrap job, the service and the TLS init job read the prod profile's CA (the vault-ca volume).
VAULT_CA_DIR = "/run/vault-ca"
# Obviously fake values for the variables compose.yaml requires.
VARIABLES: dict[str, str] = {}
SERVE = ["credctl", "serve", "--host", "0.0.0.0", "--port", "8000"]
# Where the bootstrap job writes the service's AppRole files, and the service reads them (one named volume).
APPROLE_DIR = "/run/approle"

# Compose's interpolation syntax: `$$` (a literal `$`), `${...}`, `$NAME`; a `$` followed by anything else is
# an error in Compose, and is matched here with no group set.
_DOLLAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<bare>\w+))?")
_BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<op>:\?|:-|:\+)(?P<arg>.*))?", re.DOTALL)


class MissingVariableError(Exception):
    """A `${NAME:?message}` variable is unset: Compose refuses to start, printing the message."""


def interpolate(value: str, variables: Mapping[str, str], seen: set[tuple[str, str, str]] | None = None) -> str:
    """`value` as Compose passes it on. Only `${NAME:?message}`, `${NAME:-default}`, `${NAME:+value}` (`value` when
    NAME is set and not empty, else empty) and `$$` are allowed."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        braced = match["braced"]
        reference = _BRACED.fullmatch(braced) if braced is not None else None
        if reference is None or reference["op"] is None:
            raise AssertionError(
                f"{match[0]!r} in {value!r}: use ${{NAME:?message}}, ${{NAME:-default}}, ${{NAME:+value}}, or $$ for "
                "the shell"
            )
        name, op, arg = reference["name"], reference["op"], reference["arg"]
        if seen is not None:
            seen.add((name, op, arg))
        if op == ":?":
            if not variables.get(name):
                raise MissingVariableError(f"{name}: {arg}")
            return variables[name]
        if op == ":+":
            return arg if variables.get(name) else ""
        return variables.get(name) or arg

    return _DOLLAR.sub(replace, value)


def walk(node: Any, change: Callable[[str], str]) -> Any:
    """`node` with `change` applied to every string value (not to keys, as Compose does)."""
    if isinstance(node, str):
        return change(node)
    if isinstance(node, list):
        return [walk(item, change) for item in node]
    if isinstance(node, dict):
        return {key: walk(item, change) for key, item in node.items()}
    return node


@cache
def raw_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def load_compose(**overrides: str) -> dict[str, Any]:
    """compose.yaml after interpolation with VARIABLES (and `overrides`), as the containers would see it."""
    variables = {**VARIABLES, **overrides}
    result: dict[str, Any] = walk(raw_compose(), lambda value: interpolate(value, variables))
    return result


def services(**overrides: str) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = load_compose(**overrides)["services"]
    return result


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Target path -> source (a named volume, or a ./path bind) of a service's short-syntax volumes."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_mode = volume.split(":")
        found[target] = source
    return found


def config_paths(service: Mapping[str, Any]) -> list[str]:
    """Every ``-config=`` file of a server's command, in order (OpenBao merges them)."""
    return [arg.removeprefix("-config=") for arg in service["command"] if arg.startswith("-config=")]


def config_path(service: Mapping[str, Any]) -> str:
    """The server's main config file: its first ``-config=`` (OpenBao's seal, when there is one, comes second)."""
    return config_paths(service)[0]


def token_reading_command(command: list[str]) -> tuple[str, str, str]:
    """(variable, token file, what runs next) of a `sh -c 'NAME=$(cat FILE) && export NAME && ...'` command."""
    assert command[:2] == ["sh", "-c"]
    (script,) = command[2:]
    match = re.fullmatch(r"(\w+)=\$\(cat (\S+)\) && export \1 && (.+)", script)
    assert match, script
    return match[1], match[2], match[3]


def image_tag(image: str, repository: str) -> str:
    name, _, tag = image.partition(":")
    assert name == repository
    assert tag != "latest"
    assert re.search(r"\d", tag), f"{image} is not pinned to a version"
    return tag


def hcl_block(text: str, header: str) -> str:
    """The body of the first top-level `header { ... }` block (HCL nesting counted by braces)."""
    start = re.search(rf"^{header}\s*\{{", text, re.MULTILINE)
    assert start, f"no {header} block"
    depth, index = 1, start.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        index += 1
    return text[start.end() : index - 1]


def hcl_string(body: str, key: str) -> str:
    match = re.search(rf'^\s*{key}\s*=\s*"([^"]*)"', body, re.MULTILINE)
    assert match, f"no {key} in {body!r}"
    return match[1]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


class RecordingEnviron(Mapping[str, str]):
    """An environ that remembers every name the code under test looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def service_environ(service: Mapping[str, Any], approle_dir: Path) -> RecordingEnviron:
    """The service's environment, with the AppRole and vault-ca volumes' mount points and /run/secrets moved to
    `approle_dir`."""
    moved = {
        name: str(approle_dir / Path(value).name)
        if value.startswith((f"{APPROLE_DIR}/", "/run/secrets/", f"{VAULT_CA_DIR}/"))
        else value
        for name, value in service["environment"].items()
    }
    return RecordingEnviron(moved)


def posix_sh() -> str:
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell
    return shell
