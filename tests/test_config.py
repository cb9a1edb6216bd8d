"""Settings from the environment: required values, placeholders refused outside dev mode, typed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, Settings

BASE = {"DATABASE_URL": "postgresql://u@db/credentials", "VAULT_ADDR": "http://vault:8200", "VAULT_TOKEN": "s.real"}


def test_minimal_environment_gives_documented_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.transit_key, settings.kv_mount, settings.vault_workers, settings.dev_mode) == (
        "credentials",
        "credentials",
        32,
        False,
    )


@pytest.mark.parametrize("missing", ["DATABASE_URL", "VAULT_ADDR", "VAULT_TOKEN"])
def test_each_required_setting_is_named_when_missing(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        Settings.from_env(env)


def test_placeholder_token_is_refused_outside_dev_mode() -> None:
    with pytest.raises(ConfigError, match="placeholder"):
        Settings.from_env({**BASE, "VAULT_TOKEN": "root"})
    assert Settings.from_env({**BASE, "VAULT_TOKEN": "root", "CREDENTIALS_DEV_MODE": "true"}).dev_mode is True


def test_typed_values_are_parsed_and_bad_ones_named() -> None:
    settings = Settings.from_env({**BASE, "CREDENTIALS_VAULT_WORKERS": "8", "CREDENTIALS_VAULT_TIMEOUT": "2.5"})
    assert (settings.vault_workers, settings.vault_timeout) == (8, 2.5)
    with pytest.raises(ConfigError, match="CREDENTIALS_VAULT_WORKERS='many' is not a valid int"):
        Settings.from_env({**BASE, "CREDENTIALS_VAULT_WORKERS": "many"})
    with pytest.raises(ConfigError, match="CREDENTIALS_DEV_MODE='maybe' is not a valid bool"):
        Settings.from_env({**BASE, "CREDENTIALS_DEV_MODE": "maybe"})


def test_approle_secrets_can_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "role").write_text("role-123\n")
    (tmp_path / "secret").write_text("secret-456\n")
    env = {k: v for k, v in BASE.items() if k != "VAULT_TOKEN"}
    settings = Settings.from_env(
        {**env, "VAULT_ROLE_ID_FILE": str(tmp_path / "role"), "VAULT_SECRET_ID_FILE": str(tmp_path / "secret")}
    )
    assert (settings.vault_role_id, settings.vault_secret_id) == ("role-123", "secret-456")
    with pytest.raises(ConfigError, match="cannot be read"):
        Settings.from_env({**env, "VAULT_ROLE_ID_FILE": str(tmp_path / "nope"), "VAULT_SECRET_ID": "x"})


def test_secrets_are_not_in_the_settings_repr() -> None:
    assert "s.real" not in repr(Settings.from_env(BASE))


def test_bodies_carrying_a_secret_never_show_it_in_their_repr() -> None:
    import msgspec

    from service.schemas import AuthType, CredentialCreate, CredentialSecret, CredentialUpdate

    body = b'{"label":"x","auth_type":"api_key","credential_scope":"workspace","credentials":{"api_key":"sk_hidden"}}'
    created = msgspec.json.decode(body, type=CredentialCreate)
    updated = CredentialUpdate(label="y", credentials={"api_key": "sk_hidden"})
    revealed = CredentialSecret(id="1", version=1, auth_type=AuthType.api_key, credentials={"api_key": "sk_hidden"})

    for value in (created, updated, revealed):
        assert "sk_hidden" not in repr(value)
        assert "sk_hidden" not in f"{value}"
        assert "credentials=***" in repr(value)
    assert repr(CredentialUpdate(label="y")).endswith("credentials=UNSET, expires_at=UNSET)")


def test_a_secret_never_prints_its_bytes() -> None:
    from vault.secret import Secret

    secret = Secret(b"sk_live_plaintext")

    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    assert "sk_live" not in repr([secret, {"k": secret}])
    assert secret.reveal() == b"sk_live_plaintext"
    assert secret == Secret(b"sk_live_plaintext")
    assert secret != b"sk_live_plaintext"
