"""Developing: ``credctl dev`` (the whole stack on this machine) and ``credctl dev-token`` (a user token)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

if TYPE_CHECKING:
    import uvicorn

from service.cli.base import fail, main

DEV_DATABASE = "credentials_dev"
_THE_STACKS = frozenset(
    {
        "DATABASE_URL", "VAULT_ADDR", "VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_CACERT",
        "CREDENTIALS_VAULT_ADDRS", "CREDENTIALS_VAULT_APPROLE_MOUNT", "CREDENTIALS_TRANSIT_MOUNT",
        "CREDENTIALS_TRANSIT_KEY", "CREDENTIALS_KV_MOUNT", "CREDENTIALS_DEV_MODE", "CREDENTIALS_JWT_HS256_SECRET",
    }
)  # fmt: skip
"""Settings (and their ``_FILE`` forms) that ``credctl dev`` decides itself: the backends it starts and bootstraps."""
DEV_WORKSPACE = "dev"


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@main.command()
@click.option("--port", default=8000, show_default=True, type=int, help="port of the service on 127.0.0.1")
@click.option(
    "--state-dir",
    default=".credctl",
    show_default=True,
    type=click.Path(path_type=Path),
    help="where OpenBao's files (and an embedded Postgres, if one is needed) live; removed on exit if made here",
)
@click.option(
    "--database",
    default=DEV_DATABASE,
    show_default=True,
    help="dev database to create; it must not exist yet (another stack's is never touched) and is dropped on exit",
)
def dev(port: int, state_dir: Path, database: str) -> None:
    """The whole stack on this machine: OpenBao, Postgres, bootstrap, migrations, the service on 127.0.0.1."""
    state_dir = state_dir.resolve()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C
    try:
        with _foreground_of_the_terminal():
            run_dev_stack(state_dir, port, database, echo=click.echo)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how this command is meant to end; everything was stopped on the way out
    except RuntimeError as exc:
        fail(str(exc))


@contextlib.contextmanager
def _foreground_of_the_terminal() -> Iterator[None]:
    """Take the terminal's Ctrl-C for this process alone while it runs, when a parent shares its process group.

    Under ``just dev`` the terminal's SIGINT reaches ``just`` as well as this command, and ``just`` then reports
    the recipe as interrupted (exit 130) however cleanly this command stopped. In a process group of its own that
    is the terminal's foreground, Ctrl-C reaches only this command (and the servers it starts); the terminal is
    handed back on the way out. Run straight from a shell, this process already leads its group: nothing changes.
    """
    try:
        terminal = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        yield  # no controlling terminal (CI, a test's pipe): nothing to take
        return
    try:
        previous = os.tcgetpgrp(terminal)
        if os.getpgrp() == os.getpid() or previous != os.getpgrp():
            yield
            return
        os.setpgid(0, 0)
        # A background group changing the foreground gets SIGTTOU; ignored, the call just proceeds.
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.tcsetpgrp(terminal, os.getpgrp())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.tcsetpgrp(terminal, previous)
    finally:
        os.close(terminal)


def run_dev_stack(state_dir: Path, port: int, database: str, echo: Callable[[str], None] = print) -> None:
    """Start everything, print how to use it once the service answers, serve until Ctrl-C, then stop what it
    started (and only that: a database is dropped only if this run created it)."""
    import uvicorn

    from db.database import bind, migrate
    from devtools import stack
    from service.app import create_app
    from service.auth import api_keys
    from service.auth.principal import Permission
    from service.config import Settings
    from service.server import server_options

    if stack.port_in_use(port):
        raise RuntimeError(f"127.0.0.1:{port} is taken; pass --port")
    # Every setting `serve` reads (log format and level, limits, telemetry, ...) from the environment, except the
    # backends, which are this stack's: read before anything starts, so a bad value stops the command at once.
    environ = {k: v for k, v in os.environ.items() if k.removesuffix("_FILE") not in _THE_STACKS}
    placeholders = {
        "DATABASE_URL": "postgresql://127.0.0.1/dev",
        "VAULT_ADDR": "http://127.0.0.1",
        "VAULT_TOKEN": "root",
    }
    environ.update(placeholders)  # replaced below by the stack's own, once it runs
    base = Settings.from_env({**environ, "CREDENTIALS_DEV_MODE": "true"})
    # Unwound in reverse, each step on its own: nothing this command made stays behind.
    with contextlib.ExitStack() as exits:
        exits.callback(echo, "stopped: OpenBao, the dev database and everything else this command started.")
        if not state_dir.exists():
            exits.callback(shutil.rmtree, state_dir, ignore_errors=True)
        server_url = exits.enter_context(stack.postgres_server(state_dir, say=echo))
        # Created here or refused: a database of that name belongs to someone else (another stack's, in use, or
        # one left by a killed run), and dropping it would wipe their data under them.
        database_url = asyncio.run(stack.create_database(server_url, database))
        exits.callback(lambda: asyncio.run(stack.drop_database(server_url, database)))
        echo("starting OpenBao (dev server, file audit device) ...")
        bao = stack.start_bao(state_dir / "openbao", port=8200 if not stack.port_in_use(8200) else None)
        exits.callback(bao.stop)

        echo("bootstrapping Vault ...")
        for step in stack.bootstrap_dev_vault(bao):
            echo(f"  {step}")
        echo(f"migrating ... {asyncio.run(migrate(database_url))}")

        async def new_key() -> str:
            await asyncio.to_thread(bind, database_url)
            return (await api_keys.create(DEV_WORKSPACE, list(Permission), "credctl dev")).key

        key = asyncio.run(new_key())
        # User tokens too: a new HS256 secret each run (32 random bytes), so tokens minted for one run die with it.
        jwt_secret = secrets.token_hex(32)
        settings = msgspec.structs.replace(
            base,
            database=msgspec.structs.replace(base.database, url=database_url),
            vault=msgspec.structs.replace(base.vault, addr=bao.addr, token=bao.token),
            jwt=msgspec.structs.replace(base.jwt, hs256_secret=jwt_secret),
        )
        banner = ready_message(
            DevStack(
                url=f"http://127.0.0.1:{port}",
                key=key,
                permissions=[p.value for p in Permission],
                jwt_secret=jwt_secret,
                database_url=database_url,
                vault_addr=bao.addr,
                root_token=bao.token,
                audit_log=bao.audit_log,
            )
        )
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, **server_options(settings))
        server = uvicorn.Server(config)
        asyncio.run(_serve_then_announce(server, lambda: echo(banner)))


async def _serve_then_announce(server: uvicorn.Server, announce: Callable[[], None]) -> None:
    """Serve, and announce once the port accepts connections (uvicorn sets ``started`` after it binds and the
    app's start-up has run), so every command the banner prints works the moment it is shown."""
    serving = asyncio.ensure_future(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn offers a flag, no event
        await asyncio.sleep(0.05)
    if server.started:
        announce()
    await serving


def credctl_command() -> str:
    """How to call this very ``credctl`` from a shell: its name when PATH finds this one, else its absolute path
    (``just dev`` runs ``.venv/bin/credctl``, which a pasted ``credctl ...`` would not find)."""
    here = Path(sys.argv[0])
    if here.name == "credctl" and here.exists():
        on_path = shutil.which("credctl")
        if on_path and Path(on_path).resolve() == here.resolve():
            return "credctl"
        return str(here.absolute())
    return "credctl"


def curl_example(url: str, key: str) -> str:
    body = (
        '{"label": "Stripe", "auth_type": "api_key", "credential_scope": "workspace", '
        '"credentials": {"api_key": "sk_test_123"}}'
    )
    return (
        f"curl -s {url}/api/v1/credentials -H {shlex.quote('Authorization: Bearer ' + key)} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )


def mint_command(jwt_secret: str, workspace: str = DEV_WORKSPACE, role: str = "owner") -> str:
    """The ``credctl dev-token`` command that mints a user token the dev service accepts."""
    command = [credctl_command(), "dev-token", "--workspace", workspace, "--role", role, "--secret", jwt_secret]
    return shlex.join(command)


@dataclass(frozen=True)
class DevStack:
    """What a running ``credctl dev`` offers, for its banner."""

    url: str
    key: str
    permissions: list[str]
    jwt_secret: str
    database_url: str
    vault_addr: str
    root_token: str
    audit_log: Path


def ready_message(dev: DevStack) -> str:
    """What ``credctl dev`` prints once the service answers: where, with which API key and user-token secret, and
    the environment other ``credctl`` commands (``api-key create``, ``migrate``) need to reach this stack."""
    session = f'curl -s {dev.url}/api/v1/auth/session -H "Authorization: Bearer $({mint_command(dev.jwt_secret)})"'
    exports = shlex.join(["export", f"DATABASE_URL={dev.database_url}", f"VAULT_ADDR={dev.vault_addr}"])
    return "\n".join(
        [
            "",
            f"Credentials service: {dev.url}   (OpenAPI: {dev.url}/schema/openapi.json)",
            f"API key (workspace '{DEV_WORKSPACE}'; {', '.join(dev.permissions)}): {dev.key}",
            f"JWT HS256 secret (user tokens; this run only): {dev.jwt_secret}   mint one: "
            f"{mint_command(dev.jwt_secret)}",
            f"DATABASE_URL: {dev.database_url}",
            f"Vault: {dev.vault_addr}   root token: {dev.root_token}   audit log: {dev.audit_log}",
            "For other credctl commands (api-key create, migrate) in another shell:",
            f"  {exports}",
            "Try:",
            f"  {curl_example(dev.url, dev.key)}",
            f"  {session}",
            "Ctrl-C stops everything this command started.\n",
        ]
    )


@main.command("dev-token")
@click.option("--workspace", required=True, help="the workspace the token lists")
@click.option(
    "--role",
    default="owner",
    show_default=True,
    type=click.Choice(["owner", "admin", "member", "viewer"]),
    help="the user's role in the workspace",
)
@click.option(
    "--secret",
    required=True,
    envvar="CREDENTIALS_JWT_HS256_SECRET",
    help="the service's HS256 secret (`credctl dev` prints it; default: CREDENTIALS_JWT_HS256_SECRET)",
)
@click.option("--sub", default="dev-user", show_default=True, help="the user's id")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="seconds until it expires")
@click.option("--issuer", default=None, help="iss claim, for a service with CREDENTIALS_JWT_ISSUER")
@click.option("--audience", default=None, help="aud claim, for a service with CREDENTIALS_JWT_AUDIENCE")
def dev_token(
    workspace: str, role: str, secret: str, sub: str, ttl: int, issuer: str | None, audience: str | None
) -> None:
    """Print a user token (HS256 JWT) for trying the API as a user: `sub` holds `role` in `workspace`. For
    development: anyone with the secret can mint any user."""
    import jwt

    if len(secret.encode()) < 32:
        fail("--secret must be at least 32 bytes, as the service requires of CREDENTIALS_JWT_HS256_SECRET")
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, object] = {
        "sub": sub,
        "iat": now,
        "exp": now + ttl,
        "workspaces": [{"id": workspace, "role": role}],
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    click.echo(jwt.encode(claims, secret, algorithm="HS256"))
