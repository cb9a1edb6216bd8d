"""``credctl dev-token``: a user token the service accepts, for trying the API as a user (no server needed)."""

from __future__ import annotations

import secrets

import click
import jwt
import pytest
from click.testing import CliRunner, Result

from service.auth.principal import Role
from service.auth.tokens import TokenVerifier
from service.cli import main
from service.cli.dev import dev_token
from service.errors import Unauthorized


def credctl(*args: str, **env: str) -> Result:
    """``credctl`` in process, with only ``env`` as the service's variables."""
    unset: dict[str, str | None] = {"CREDENTIALS_JWT_HS256_SECRET": None}
    return CliRunner().invoke(main, list(args), env={**unset, **env})


def test_dev_token_mints_a_token_the_service_verifies_as_the_user_in_the_workspace_with_the_role() -> None:
    secret = secrets.token_hex(32)
    result = credctl("dev-token", "--workspace", "wsp_try", "--role", "viewer", "--secret", secret, "--sub", "usr_ada")
    from_env = credctl("dev-token", "--workspace", "wsp_try", CREDENTIALS_JWT_HS256_SECRET=secret)

    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.count("\n") == 1
    user = TokenVerifier(hs256_secret=secret).verify(result.stdout.strip())
    assert (user.id, dict(user.workspaces)) == ("usr_ada", {"wsp_try": "viewer"})
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 3600
    assert from_env.exit_code == 0, from_env.output
    assert TokenVerifier(hs256_secret=secret).verify(from_env.stdout.strip()).workspaces == {"wsp_try": "owner"}
    with pytest.raises(Unauthorized):
        TokenVerifier(hs256_secret=secrets.token_hex(32)).verify(result.stdout.strip())


def test_dev_token_offers_exactly_the_roles_the_service_knows_and_refuses_a_short_secret() -> None:
    (role,) = [param for param in dev_token.params if param.name == "role"]
    short = credctl("dev-token", "--workspace", "w", "--secret", "x" * 31)
    unknown = credctl("dev-token", "--workspace", "w", "--role", "root", "--secret", "x" * 32)

    assert isinstance(role.type, click.Choice)
    assert set(role.type.choices) == set(Role)
    assert (short.exit_code, short.stdout) == (2, "")
    assert short.stderr == (
        "credctl: --secret must be at least 32 bytes, as the service requires of CREDENTIALS_JWT_HS256_SECRET\n"
    )
    assert (unknown.exit_code, unknown.stdout) == (2, "")
    assert "'root' is not one of" in unknown.stderr
