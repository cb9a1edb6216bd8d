"""User tokens for the tests: the keys the test app trusts, and a minter for valid and broken tokens."""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

HS256_SECRET = "test-only-hs256-secret-0123456789abcdef"
ISSUER = "https://auth.test.invalid/auth/v1"
AUDIENCE = "authenticated"


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@cache
def stranger_rsa_key() -> rsa.RSAPrivateKey:
    """A key the service does not trust."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_jwks(path: Path) -> Path:
    """A JWKS file with the RSA key (kid ``rsa-1``) and the EC key (kid ``ec-1``)."""
    keys = []
    for kid, algorithm, key in (
        ("rsa-1", jwt.algorithms.RSAAlgorithm, rsa_key()),
        ("ec-1", jwt.algorithms.ECAlgorithm, ec_key()),
    ):
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "use": "sig"})
    path.write_text(json.dumps({"keys": keys}))
    return path


def mint(
    sub: str,
    workspaces: Any,
    /,
    *,
    algorithm: str = "HS256",
    key: Any = None,
    kid: str | None = None,
    lifetime: int = 600,
    claim: str = "workspaces",
    **claims: Any,
) -> str:
    """A signed token for ``sub`` with the test issuer and audience; ``claims`` override or add (None removes)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + lifetime,
        claim: workspaces,
    }
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    if key is None:
        key = {"HS256": HS256_SECRET, "RS256": rsa_key(), "ES256": ec_key()}[algorithm]
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)
