"""Developing: ``credctl dev`` (the whole stack on this machine) and ``credctl dev-token`` (a user token)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import shutil
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click

from service.cli.base import fail, main

DEV_DATABASE = "credentials_dev"
DEV_WORKSPACE = "dev"


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@main.command()
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--state-dir", default=".credctl", show_default=True, type=click.Path(path_type=Path))
@click.option("--database", default=DEV_DATABASE, show_default=True, help="dev database (dropped on exit)")
def dev(port: int, state_dir: Path, database: str) -> None:
    """The whole stack on this machine: OpenBao, Postgres, bootstrap, migrations, the service on 127.0.0.1."""
    state_dir = state_dir.resolve()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C
    try:
        run_dev_stack(state_dir, port, database, echo=click.echo)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how this command is meant to end; everything was stopped on the way out
    except RuntimeError as exc:
        fail(str(exc))


def run_dev_stack(state_dir: Path, port: int, database: str, echo: Callable[[str], None] = print) -> None:
    """Start everything, print how to use it, serve until Ctrl-C, then stop what it started."""
    import uvicorn

    from db.database import bind, migrate
    from devtools import stack
    from service.app import create_app
    from service.auth import api_keys
    from service.auth.principal import Permission
    from service.config import DatabaseSettings, HardeningSettings, JwtSettings, Settings, VaultSettings
    from service.server import server_options

    if stack.port_in_use(port):
        raise RuntimeError(f"127.0.0.1:{port} is taken; pass --port")
    # Unwound in reverse, each step on its own: nothing this command made stays behind.
    with contextlib.ExitStack() as exits:
        exits.callback(echo, "stopped: OpenBao, the dev database and everything else this command started.")
        if not state_dir.exists():
            exits.callback(shutil.rmtree, state_dir, ignore_errors=True)
        echo("starting OpenBao (dev server, file audit device) ...")
        bao = stack.start_bao(state_dir / "openbao", port=8200 if not stack.port_in_use(8200) else None)
        exits.callback(bao.stop)
        server_url = exits.enter_context(stack.postgres_server(state_dir, say=echo))
        # The dev Vault keeps its data in memory, so the metadata starts afresh with it and goes with it.
        asyncio.run(stack.drop_database(server_url, database))
        database_url = asyncio.run(stack.ensure_database(server_url, database))
        exits.callback(lambda: asyncio.run(stack.drop_database(server_url, database)))

        echo("bootstrapping Vault ...")
        for step in stack.bootstrap_dev_vault(bao):
            echo(f"  {step}")
        echo("migrating ...")
        asyncio.run(migrate(database_url))

        async def new_key() -> str:
            await asyncio.to_thread(bind, database_url)
            return (await api_keys.create(DEV_WORKSPACE, list(Permission), "credctl dev")).key

        key = asyncio.run(new_key())
        # User tokens too: a new HS256 secret each run (32 random bytes), so tokens minted for one run die with it.
        jwt_secret = secrets.token_hex(32)
        settings = Settings(
            database=DatabaseSettings(url=database_url),
            vault=VaultSettings(addr=bao.addr, token=bao.token),
            jwt=JwtSettings(hs256_secret=jwt_secret),
            hardening=HardeningSettings.from_env(),
            dev_mode=True,
        )
        url = f"http://127.0.0.1:{port}"
        echo(ready_message(url, key, [p.value for p in Permission], jwt_secret, bao.addr, bao.token, bao.audit_log))
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="info", **server_options(settings.hardening)
        )
        server = uvicorn.Server(config)
        server.run()


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
    return shlex.join(["credctl", "dev-token", "--workspace", workspace, "--role", role, "--secret", jwt_secret])


def ready_message(
    url: str, key: str, permissions: list[str], jwt_secret: str, vault_addr: str, root_token: str, audit_log: Path
) -> str:
    """What ``credctl dev`` prints once everything is up: where, with which API key and user-token secret."""
    session = f'curl -s {url}/api/v1/auth/session -H "Authorization: Bearer $({mint_command(jwt_secret)})"'
    return "\n".join(
        [
            "",
            f"Credentials service: {url}   (OpenAPI: {url}/schema/openapi.json)",
            f"API key (workspace '{DEV_WORKSPACE}'; {', '.join(permissions)}): {key}",
            f"JWT HS256 secret (user tokens; this run only): {jwt_secret}   mint one: {mint_command(jwt_secret)}",
            f"Vault: {vault_addr}   root token: {root_token}   audit log: {audit_log}",
            "Try:",
            f"  {curl_example(url, key)}",
            f"  {session}",
            "Ctrl-C stops everything this command started.\n",
        ]
    )


@main.command("dev-token")
@click.option("--workspace", required=True, help="the workspace the token lists")
@click.option("--role", default="owner", show_default=True, type=click.Choice(["owner", "admin", "member", "viewer"]))
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
