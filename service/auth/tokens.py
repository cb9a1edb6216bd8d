"""User tokens: verify a signed-in user's JWT and read who the user is and which workspaces they belong to.

A token is verified with the configured HS256 secret, or with an RS256/ES256 public key from the configured PEM
or JWKS file; the token's ``alg`` picks which, and a key is only ever used with its own algorithm (no HS256 with
a public key as the secret). ``exp`` and ``sub`` are required; ``nbf`` and ``iat`` are checked when present;
``iss`` and ``aud`` when configured. Every check allows ``CREDENTIALS_JWT_LEEWAY`` seconds of clock skew.

The workspaces claim (``CREDENTIALS_JWT_WORKSPACES_CLAIM``, default ``workspaces``) lists the user's workspaces
and the role in each, as a list or as a mapping::

    "workspaces": [{"id": "wsp_acme", "role": "owner"}, {"id": "wsp_lab", "role": "viewer"}]
    "workspaces": {"wsp_acme": "owner", "wsp_lab": "viewer"}

Entries with another role are ignored (they grant nothing), and so are entries whose workspace id breaks the
workspace-id rule (``service.auth.identifiers``: no such workspace can hold anything here). A claim of another
shape (a role that is not a string, an entry that is not an object) refuses the token (401), as does a ``sub``
that is not 1-255 printable ASCII characters.

``exp``, ``nbf`` and ``iat`` must be JSON numbers (PyJWT would take the string ``"9999999999"``), and ``exp`` at
most ``MAX_LIFETIME`` ahead: ``1e30`` is a token that never expires, not a token to trust.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from service.auth.identifiers import is_user_id, is_workspace_id
from service.auth.principal import Role
from service.config import ConfigError, JwtSettings
from service.errors import AuthFailure, Unauthorized

log = logging.getLogger("service.auth.tokens")

SUPABASE_PREFIX = "supabase_"
"""Mielto's own clients send ``Authorization: Bearer supabase_<jwt>``."""

ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
INVALID_TOKEN = "Invalid token"  # noqa: S105 (an error message, not a password)
EXPIRED_TOKEN = "Token has expired"  # noqa: S105
MAX_LIFETIME = 366 * 86_400
"""The furthest ahead a user token's ``exp`` may be (a year, leeway aside)."""
_NUMERIC_DATES = ("exp", "nbf", "iat")


class AbsurdClaim(jwt.InvalidTokenError):
    """A numeric date that is not a number, or an ``exp`` absurdly far ahead."""


class MalformedClaim(jwt.InvalidTokenError):
    """The workspaces claim or ``sub`` has a shape the service cannot use."""


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class User:
    """A verified user token: the user and the role they hold in each workspace."""

    id: str
    workspaces: Mapping[str, Role]
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class VerificationKey:
    algorithm: str
    key: Any
    kid: str | None = None


class TokenVerifier:
    """Verifies user tokens with the keys and rules from the settings."""

    def __init__(
        self,
        *,
        hs256_secret: str | None = None,
        public_keys: tuple[VerificationKey, ...] = (),
        issuer: str | None = None,
        audience: str | None = None,
        workspaces_claim: str = "workspaces",
        leeway: int = 30,
    ) -> None:
        self._secret = hs256_secret.encode() if hs256_secret else None
        self._public_keys = public_keys
        self._issuer = issuer
        self._audience = audience
        self._claim_path = workspaces_claim.split(".")
        self._leeway = leeway

    def __repr__(self) -> str:
        return f"TokenVerifier(hs256={self._secret is not None}, public_keys={len(self._public_keys)})"

    @classmethod
    def from_settings(cls, settings: JwtSettings) -> TokenVerifier | None:
        """The verifier, or None when no user-token key is configured (then only API keys are accepted)."""
        keys = load_public_keys(Path(settings.public_keys_file)) if settings.public_keys_file else ()
        if not settings.hs256_secret and not keys:
            return None
        return cls(
            hs256_secret=settings.hs256_secret,
            public_keys=keys,
            issuer=settings.issuer,
            audience=settings.audience,
            workspaces_claim=settings.workspaces_claim,
            leeway=settings.leeway_seconds,
        )

    def verify(self, token: str) -> User:
        """The user of a valid token; ``Unauthorized`` (naming no key and echoing no token) otherwise."""
        try:
            claims = self._decode(token)
        except jwt.ExpiredSignatureError:
            raise Unauthorized(EXPIRED_TOKEN, AuthFailure.expired_token) from None
        except jwt.PyJWTError as exc:
            # PyJWTError, not only InvalidTokenError: a key PyJWT refuses (e.g. too short) must also be a 401.
            # The class name says why (InvalidAudienceError, InvalidSignatureError, ...); the message could quote
            # claims, so it stays out of the log too.
            log.info("user token refused: %s", type(exc).__name__)  # safe: ids and exception class names only
            raise Unauthorized(INVALID_TOKEN, AuthFailure.invalid_token) from None
        return self._user(claims)

    def _decode(self, token: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        algorithm = str(header.get("alg"))
        kid = header.get("kid")
        if algorithm == "HS256" and self._secret is not None:
            candidates: list[Any] = [self._secret]
        elif algorithm in ASYMMETRIC_ALGORITHMS:
            candidates = [
                key.key
                for key in self._public_keys
                if key.algorithm == algorithm and (key.kid is None or kid is None or key.kid == kid)
            ]
        else:
            candidates = []
        if not candidates:
            raise jwt.InvalidAlgorithmError("no key for this algorithm or key id")
        for index, key in enumerate(candidates):
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={"require": ["exp", "sub"], "enforce_minimum_key_length": True},
                )
            except jwt.InvalidSignatureError:
                # A PEM file has no key ids: try each key of the token's algorithm in turn.
                if index == len(candidates) - 1:
                    raise
                continue
            _check_numeric_dates(claims, self._leeway)
            return claims
        raise jwt.InvalidSignatureError  # unreachable: the loop returns or raises

    def _user(self, claims: dict[str, Any]) -> User:
        subject = claims["sub"]
        if not is_user_id(subject):
            log.info("user token refused: unusable sub")  # safe: ids and exception class names only
            raise Unauthorized(INVALID_TOKEN, AuthFailure.invalid_token)
        found: Any = claims
        for part in self._claim_path:
            found = found.get(part) if isinstance(found, dict) else None
        workspaces = parse_workspaces(found)
        if workspaces is None:
            log.info("user token refused: malformed workspaces claim")  # safe: fixed text
            raise Unauthorized(INVALID_TOKEN, AuthFailure.invalid_token)
        email = claims.get("email")
        metadata = claims.get("user_metadata")
        name = claims.get("name")
        if name is None and isinstance(metadata, dict):
            name = metadata.get("full_name") or metadata.get("name")
        return User(
            id=subject,
            workspaces=workspaces,
            email=email if isinstance(email, str) else None,
            name=name if isinstance(name, str) else None,
        )


def _check_numeric_dates(claims: dict[str, Any], leeway: int) -> None:
    for name in _NUMERIC_DATES:
        value = claims.get(name)
        if name not in claims:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise AbsurdClaim(f"{name} is not a number")
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp > time.time() + MAX_LIFETIME + leeway:
        raise AbsurdClaim("exp is too far ahead")


def parse_workspaces(value: Any) -> dict[str, Role] | None:
    """``{workspace id: role}`` from the claim's value (absent: no workspaces); None if it has no usable shape.
    Entries with an unknown role or a workspace id that breaks the rule are left out."""
    if value is None:
        return {}
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
        pairs = [(item.get("id", item.get("workspace_id")), item.get("role")) for item in value]
    else:
        return None
    if not all(isinstance(workspace, str) and isinstance(role, str) for workspace, role in pairs):
        return None
    kept = {
        workspace: Role(role) for workspace, role in pairs if is_workspace_id(workspace) and role in Role.__members__
    }
    if any(not is_workspace_id(workspace) for workspace, _ in pairs):
        log.info("user token: workspace ids breaking the rule ignored")  # safe: fixed text, no id echoed
    return kept


def load_public_keys(path: Path) -> tuple[VerificationKey, ...]:
    """RS256/ES256 verification keys from a JWKS JSON file or a PEM file; ``ConfigError`` naming the problem."""
    name = "CREDENTIALS_JWT_PUBLIC_KEYS_FILE"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{name}={str(path)!r} cannot be read: {exc.strerror}") from None
    keys = _jwks_keys(text, name) if text.lstrip().startswith("{") else _pem_keys(text, name)
    if not keys:
        raise ConfigError(f"{name}={str(path)!r} holds no public key")
    return keys


def _jwks_keys(text: str, name: str) -> tuple[VerificationKey, ...]:
    try:
        document = json.loads(text)
        entries = document["keys"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f'{name} is not a JWKS document ({{"keys": [...]}})') from None
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if "d" in entry:
            raise ConfigError(f"{name} holds a private key; give the public keys only")
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise ConfigError(f"{name}: key {entry.get('kid')!r} cannot be read ({type(exc).__name__})") from None
        if jwk.algorithm_name not in ASYMMETRIC_ALGORITHMS:
            raise ConfigError(
                f"{name}: key {entry.get('kid')!r} is for {jwk.algorithm_name}; only RS256 and ES256 are accepted"
            )
        keys.append(VerificationKey(jwk.algorithm_name, jwk.key, jwk.key_id))
    return tuple(keys)


def _pem_keys(text: str, name: str) -> tuple[VerificationKey, ...]:
    keys = []
    for block in _PEM_BLOCK.finditer(text):
        kind = block.group(1)
        data = block.group(0).encode()
        if kind == "PUBLIC KEY":
            key: Any = load_pem_public_key(data)
        elif kind == "CERTIFICATE":
            key = x509.load_pem_x509_certificate(data).public_key()
        elif "PRIVATE" in kind:
            raise ConfigError(f"{name} holds a private key; give the public keys only")
        else:
            continue
        if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
            keys.append(VerificationKey("RS256", key))
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            keys.append(VerificationKey("ES256", key))
        else:
            raise ConfigError(f"{name}: only RSA (2048 bits or more, RS256) and P-256 (ES256) public keys are accepted")
    return tuple(keys)
