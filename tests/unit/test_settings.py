"""Settings from the environment: required values, placeholders refused outside dev mode, typed and bounded values,
one line naming the variable for every refusal; user-token settings; no secret in a repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, Settings

BASE = {"DATABASE_URL": "postgresql://u@db/credentials", "VAULT_ADDR": "http://vault:8200", "VAULT_TOKEN": "s.real"}


def test_minimal_environment_gives_documented_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.vault.transit_key, settings.vault.kv_mount, settings.vault.workers, settings.dev_mode) == (
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
    assert (settings.vault.workers, settings.vault.timeout) == (8, 2.5)
    with pytest.raises(ConfigError, match="CREDENTIALS_VAULT_WORKERS='many' is not a valid int"):
        Settings.from_env({**BASE, "CREDENTIALS_VAULT_WORKERS": "many"})
    with pytest.raises(ConfigError, match="CREDENTIALS_DEV_MODE='maybe' is not a valid bool \\(true or false\\)"):
        Settings.from_env({**BASE, "CREDENTIALS_DEV_MODE": "maybe"})


def test_approle_secrets_can_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "role").write_text("role-123\n")
    (tmp_path / "secret").write_text("secret-456\n")
    env = {k: v for k, v in BASE.items() if k != "VAULT_TOKEN"}
    settings = Settings.from_env(
        {**env, "VAULT_ROLE_ID_FILE": str(tmp_path / "role"), "VAULT_SECRET_ID_FILE": str(tmp_path / "secret")}
    )
    assert (settings.vault.role_id, settings.vault.secret_id) == ("role-123", "secret-456")
    with pytest.raises(ConfigError, match="cannot be read"):
        Settings.from_env({**env, "VAULT_ROLE_ID_FILE": str(tmp_path / "nope"), "VAULT_SECRET_ID": "x"})


def test_secrets_are_not_in_the_settings_repr() -> None:
    assert "s.real" not in repr(Settings.from_env(BASE))


def test_bodies_carrying_a_secret_never_show_it_in_their_repr() -> None:
    import msgspec

    from service.credentials.schemas import AuthType, CredentialCreate, CredentialSecret, CredentialUpdate

    body = b'{"label":"x","auth_type":"api_key","credential_scope":"workspace","credentials":{"api_key":"sk_hidden"}}'
    created = msgspec.json.decode(body, type=CredentialCreate)
    updated = CredentialUpdate(label="y", credentials={"api_key": "sk_hidden"})
    revealed = CredentialSecret(id="1", version=1, auth_type=AuthType.api_key, credentials={"api_key": "sk_hidden"})

    for value in (created, updated, revealed):
        assert "sk_hidden" not in repr(value)
        assert "sk_hidden" not in f"{value}"
        assert "credentials=***" in repr(value)
    assert repr(CredentialUpdate(label="y")).endswith("credentials=UNSET, expires_at=UNSET, proxy=UNSET)")


def test_a_secret_never_prints_its_bytes() -> None:
    from vault.secret import Secret

    secret = Secret(b"sk_live_plaintext")

    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    assert "sk_live" not in repr([secret, {"k": secret}])
    assert secret.reveal() == b"sk_live_plaintext"
    assert secret == Secret(b"sk_live_plaintext")
    assert secret != b"sk_live_plaintext"


# --- user tokens ---------------------------------------------------------------------------------------------------

SECRET = "a-real-secret-of-forty-bytes-0123456789ab"


def test_user_tokens_are_off_by_default_with_documented_defaults() -> None:
    settings = Settings.from_env(BASE)
    jwt = settings.jwt
    assert (jwt.hs256_secret, jwt.public_keys_file, jwt.issuer, jwt.audience) == (
        None,
        None,
        None,
        None,
    )
    assert (jwt.workspaces_claim, jwt.leeway_seconds) == ("workspaces", 30)


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
    jwt = settings.jwt
    assert jwt.hs256_secret == SECRET
    assert jwt.public_keys_file == "/etc/credentials/jwks.json"
    assert (jwt.issuer, jwt.audience) == ("https://x.supabase.co/auth/v1", "authenticated")
    assert (jwt.workspaces_claim, jwt.leeway_seconds) == ("app_metadata.workspaces", 10)
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
        ("CREDENTIALS_JWT_WORKSPACES_CLAIM", "app_metadata..workspaces", "a claim name or a dotted path"),
    ],
)
def test_bad_values_are_named(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BASE, variable: value, "CREDENTIALS_DEV_MODE": "true"})


def test_vault_cacert_is_a_readable_pem_ca_bundle_or_start_up_stops_naming_it(tmp_path: Path) -> None:
    import certifi

    assert Settings.from_env(BASE).vault.cacert is None
    assert Settings.from_env({**BASE, "VAULT_CACERT": ""}).vault.cacert is None
    assert Settings.from_env({**BASE, "VAULT_CACERT": certifi.where()}).vault.cacert == certifi.where()
    fix = "set it to the PEM file of the CA that signed Vault's certificate (just compose-certs writes one)"
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x01\x0a\x02\x82\x01\x01")
    refusals = {
        str(tmp_path / "missing.pem"): "cannot be read (No such file or directory)",
        str(tmp_path): "cannot be read (Is a directory)",
        str(der): "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        str(broken): "is not a valid PEM CA bundle",
    }
    for path, why in refusals.items():
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({**BASE, "VAULT_CACERT": path})
        message = str(refused.value)
        assert message.startswith(f"VAULT_CACERT={path!r} {why}"), message
        assert message.endswith(f"; {fix}")
        assert "\n" not in message
