"""User-token settings: documented defaults, placeholder and short secrets refused, secrets out of the repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, Settings

BASE = {"DATABASE_URL": "postgresql://u@db/credentials", "VAULT_ADDR": "http://vault:8200", "VAULT_TOKEN": "s.real"}
SECRET = "a-real-secret-of-forty-bytes-0123456789ab"


def test_user_tokens_are_off_by_default_with_documented_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.jwt_hs256_secret, settings.jwt_public_keys_file, settings.jwt_issuer, settings.jwt_audience) == (
        None,
        None,
        None,
        None,
    )
    assert (settings.jwt_workspaces_claim, settings.jwt_leeway_seconds) == ("workspaces", 30)


def test_every_jwt_setting_is_read_from_its_variable(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    settings = Settings.from_env(
        {
            **BASE,
            "CREDENTIALS_JWT_HS256_SECRET_FILE": str(tmp_path / "secret"),
            "CREDENTIALS_JWT_PUBLIC_KEYS_FILE": "/etc/credentials/jwks.json",
            "CREDENTIALS_JWT_ISSUER": "https://x.supabase.co/auth/v1",
            "CREDENTIALS_JWT_AUDIENCE": "authenticated",
            "CREDENTIALS_JWT_WORKSPACES_CLAIM": "app_metadata.workspaces",
            "CREDENTIALS_JWT_LEEWAY": "10",
        }
    )
    assert settings.jwt_hs256_secret == SECRET
    assert settings.jwt_public_keys_file == "/etc/credentials/jwks.json"
    assert (settings.jwt_issuer, settings.jwt_audience) == ("https://x.supabase.co/auth/v1", "authenticated")
    assert (settings.jwt_workspaces_claim, settings.jwt_leeway_seconds) == ("app_metadata.workspaces", 10)
    assert SECRET not in repr(settings)


def test_a_placeholder_secret_is_refused_outside_dev_mode() -> None:
    placeholder = {**BASE, "CREDENTIALS_JWT_HS256_SECRET": "super-secret-jwt-token-with-at-least-32-characters-long"}
    with pytest.raises(ConfigError, match="CREDENTIALS_JWT_HS256_SECRET is a placeholder"):
        Settings.from_env(placeholder)
    assert Settings.from_env({**placeholder, "CREDENTIALS_DEV_MODE": "true"}).dev_mode is True


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CREDENTIALS_JWT_HS256_SECRET", "short-secret", "at least 32 bytes"),
        ("CREDENTIALS_JWT_LEEWAY", "3600", "between 0 and 300"),
        ("CREDENTIALS_JWT_LEEWAY", "soon", "not a valid int"),
        ("CREDENTIALS_JWT_WORKSPACES_CLAIM", "app_metadata..workspaces", "dotted path"),
    ],
)
def test_bad_values_are_named(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BASE, variable: value, "CREDENTIALS_DEV_MODE": "true"})
