"""A credential's proxy settings: checked when they are written, resolved to how the secret is injected, stored as
JSON on the credential row (``credential.proxy``), and read back for each call."""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from service.credentials.schemas import AuthType
from service.errors import Conflict, RequestInvalid
from service.oauth import egress
from service.oauth.egress import EgressRefused, EgressRules
from service.proxy.schemas import InjectionView, ProxyCheckView, ProxyConfig, ProxyView

_BEARER_TYPES = frozenset(
    {
        AuthType.access_token,
        AuthType.oauth_token,
        AuthType.oauth_token_refresh,
        AuthType.oauth_token_refresh_rotation,
        AuthType.access_token_refresh,
    }
)
NOT_PROXYABLE = "The credential has no proxy settings; set 'proxy' (base_url, methods, path_prefixes) to use it"


def _invalid(field: str, msg: str, type_: str = "value_error") -> RequestInvalid:
    return RequestInvalid.at(["body", "proxy", field], msg, type_)


def injection_for(auth_type: AuthType, config: ProxyConfig) -> InjectionView:
    """How the secret of ``auth_type`` goes into calls (the one place that decides it)."""
    inject = config.inject
    if auth_type is AuthType.api_key:
        if inject is not None and inject.header and inject.query:
            raise _invalid("inject", "Set header or query, not both")
        if inject is not None and inject.header:
            return InjectionView(kind="header", names=[inject.header])
        if inject is not None and inject.query:
            return InjectionView(kind="query", names=[inject.query])
        return InjectionView(kind="bearer")
    if inject is not None and (inject.header or inject.query):
        raise _invalid("inject", f"header and query apply to api_key credentials, not to '{auth_type.value}'")
    if auth_type is AuthType.basic_auth:
        return InjectionView(kind="basic")
    if auth_type in _BEARER_TYPES:
        return InjectionView(kind="bearer")
    if auth_type is AuthType.public_key_secret:
        if inject is None or not inject.public_key_header or not inject.secret_key_header:
            raise _invalid("inject", "public_key_secret needs public_key_header and secret_key_header", "missing")
        return InjectionView(kind="key_pair", names=[inject.public_key_header, inject.secret_key_header])
    raise _invalid("inject", f"Credentials of auth_type '{auth_type.value}' cannot be injected into HTTP calls")


def check_base_url(url: str, rules: EgressRules) -> None:
    """The shape of ``base_url`` (the egress rules on its host are checked by ``settle``)."""
    parts = urlsplit(url)
    if parts.query or parts.fragment or url.endswith("?") or url.endswith("#"):
        raise _invalid("base_url", "base_url must not carry a query or a fragment")
    if "\\" in url or "%" in parts.path or "/." in parts.path or "//" in parts.path:
        raise _invalid("base_url", "base_url's path must be plain ('/v1', not encoded or dotted)")
    try:
        egress.parse(url, rules, "base_url")
        egress.port_of(parts, "base_url")
    except EgressRefused as exc:
        raise _invalid("base_url", str(exc), "url_refused") from None


async def settle(
    config: ProxyConfig, auth_type: AuthType, rules: EgressRules, resolve_within: float, previous: str | None = None
) -> str:
    """Check ``config`` (422 saying what is wrong) and return it as stored; the last check's outcome is kept."""
    check_base_url(config.base_url, rules)
    try:
        await egress.check_url(config.base_url, rules, resolve_within, "base_url")
    except EgressRefused as exc:
        raise _invalid("base_url", str(exc), "url_refused") from None
    for i, prefix in enumerate(config.path_prefixes):
        if "//" in prefix or any(part in {".", ".."} for part in prefix.split("/")):
            raise RequestInvalid.at(
                ["body", "proxy", "path_prefixes", i], "A prefix must not hold '//', '.' or '..'", "value_error"
            )
    before = decode(previous) if previous else None
    view = ProxyView(
        base_url=config.base_url.rstrip("/"),
        methods=list(dict.fromkeys(config.methods)),
        path_prefixes=list(dict.fromkeys(config.path_prefixes)),
        injection=injection_for(auth_type, config),
        check=None
        if config.check is None
        else ProxyCheckView(
            method=config.check.method, path=config.check.path, expected_status=config.check.expected_status
        ),
        last_checked_at=before.last_checked_at if before else None,
        last_check_outcome=before.last_check_outcome if before else None,
        last_check_status=before.last_check_status if before else None,
    )
    return msgspec.json.encode(view).decode()


def decode(stored: str) -> ProxyView:
    return msgspec.json.decode(stored, type=ProxyView)


def require(stored: str | None) -> ProxyView:
    """The settings of a proxyable credential; 409 with the reason otherwise."""
    if stored is None:
        raise Conflict(NOT_PROXYABLE)
    return decode(stored)
