"""User tokens without a server: keys from PEM and JWKS files, refusals naming the setting, roles' permissions."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.auth.principal import ROLE_PERMISSIONS
from service.auth.tokens import TokenVerifier, load_public_keys
from service.config import ConfigError
from service.errors import Unauthorized
from tests.support.tokens import AUDIENCE, ISSUER, ec_key, mint, public_pem, rsa_key, stranger_rsa_key


def test_a_pem_file_of_public_keys_and_certificates_verifies_tokens(tmp_path: Path) -> None:
    pem = tmp_path / "keys.pem"
    pem.write_bytes(public_pem(rsa_key()) + public_pem(ec_key()))
    verifier = TokenVerifier(public_keys=load_public_keys(pem), audience=AUDIENCE, issuer=ISSUER)

    for algorithm in ("RS256", "ES256"):
        user = verifier.verify(mint("usr_pem", {"wsp_pem": "admin"}, algorithm=algorithm, name="Pem User"))
        assert (user.id, dict(user.workspaces), user.name) == ("usr_pem", {"wsp_pem": "admin"}, "Pem User")
    with pytest.raises(Unauthorized, match="Invalid token"):
        verifier.verify(mint("usr_pem", {}, algorithm="RS256", key=stranger_rsa_key()))
    with pytest.raises(Unauthorized, match="Invalid token"):
        verifier.verify(mint("usr_pem", {}))  # HS256, and no secret configured


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no public key"),
        ("{not json", "is not a JWKS document"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]}', "only RS256 and ES256"),
        ("-----BEGIN PRIVATE KEY-----\nMII=\n-----END PRIVATE KEY-----\n", "private key"),
    ],
    ids=["empty", "bad-json", "hmac-jwk", "private-pem"],
)
def test_a_bad_key_file_stops_the_start_up_with_its_setting_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as raised:
        load_public_keys(path)
    assert "CREDENTIALS_JWT_PUBLIC_KEYS_FILE" in str(raised.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_public_keys(tmp_path / "missing.pem")


def test_roles_map_to_documented_permissions() -> None:
    assert {role.value: sorted(p) for role, p in ROLE_PERMISSIONS.items()} == {
        "owner": ["admin", "read", "reveal", "use", "write"],
        "admin": ["admin", "read", "reveal", "use", "write"],
        "member": ["read", "reveal", "use", "write"],
        "viewer": ["read"],
    }
