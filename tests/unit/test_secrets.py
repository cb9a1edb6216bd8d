"""The typed ``credentials`` objects, without a server: what each auth type requires, how a problem is reported (the
422's ``loc``, ``msg`` and ``type``), the limits, and the masked view."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from service.credentials import secrets
from service.credentials.schemas import AuthType
from service.errors import RequestInvalid
from tests.support.api import valid_secret


def refusal(auth_type: AuthType, credentials: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(RequestInvalid) as raised:
        secrets.validate(auth_type, credentials)
    (error,) = raised.value.errors
    return error


@pytest.mark.parametrize("auth_type", list(AuthType))
def test_a_valid_object_is_kept_whole_unknown_fields_included(auth_type: AuthType) -> None:
    given = {**valid_secret(auth_type.value), "region": "eu", "nested": {"a": [1, 2]}}

    checked = secrets.validate(auth_type, given)

    assert msgspec.json.decode(checked.plaintext.reveal()) == given
    assert isinstance(checked.fields, secrets.SECRET_TYPES[auth_type])


@pytest.mark.parametrize(
    ("auth_type", "given", "field"),
    [
        (AuthType.basic_auth, {"username": "u"}, "password"),
        (AuthType.oauth_token_refresh, {"access_token": "a", "refresh_token": "r", "token_url": "https://x.example/t"}, "client_id"),
        (AuthType.access_token_refresh, {"access_token": "a", "token_url": "https://x.example/t"}, "refresh_token"),
        (AuthType.public_key_secret, {"public_key": "p"}, "secret_key"),
    ],
)  # fmt: skip
def test_a_missing_field_is_named_with_the_auth_type(auth_type: AuthType, given: dict[str, Any], field: str) -> None:
    assert refusal(auth_type, given) == {
        "loc": ["body", "credentials", field],
        "msg": f"Field required for auth_type '{auth_type.value}'",
        "type": "missing",
    }


@pytest.mark.parametrize(
    ("given", "field", "msg", "type_"),
    [
        ({"api_key": 5}, "api_key", "Input should be a valid string", "string_type"),
        ({"api_key": " \t"}, "api_key", "api_key must not be empty", "string_too_short"),
        ({"api_key": "k", "expires_at": "soon"}, "expires_at", "Input should be an ISO 8601 date-time or epoch seconds", "datetime_parsing"),
        ({"api_key": "k", "expires_at": True}, "expires_at", "Input should be an ISO 8601 date-time or epoch seconds", "datetime_parsing"),
        ({"api_key": "k", "token_endpoint_auth_method": "jwt"}, "token_endpoint_auth_method", "Input should be 'client_secret_basic' or 'client_secret_post'", "enum"),
        ({"api_key": "k", "scope": ["read"]}, "scope", "Input should be a valid string", "string_type"),
    ],
)  # fmt: skip
def test_a_known_field_of_the_wrong_shape_is_refused_where_it_is(
    given: dict[str, Any], field: str, msg: str, type_: str
) -> None:
    assert refusal(AuthType.api_key, given) == {"loc": ["body", "credentials", field], "msg": msg, "type": type_}


def test_urls_and_connection_strings_are_checked() -> None:
    oauth = {**valid_secret("oauth_token_refresh"), "token_url": "ftp://x.example/t"}

    assert refusal(AuthType.oauth_token_refresh, oauth)["type"] == "url_parsing"
    assert refusal(AuthType.connection_string, {"connection_string": "just words"})["type"] == "connection_string"
    for fine in ("postgresql://u:p@db/app", "host=db port=5432 user=svc", "Server=tcp:db,1433;Database=app;"):
        secrets.validate(AuthType.connection_string, {"connection_string": fine})


@pytest.mark.parametrize(
    ("given", "msg", "type_"),
    [
        ({}, "credentials must not be empty", "value_error"),
        ({"k": "x" * secrets.MAX_SECRET_BYTES}, f"credentials must be at most {secrets.MAX_SECRET_BYTES} bytes as JSON, got {secrets.MAX_SECRET_BYTES + 8}", "too_long"),
        ({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}, "credentials may nest at most 8 levels", "too_deep"),
        ({"k": "a\x00b"}, "strings must not contain NUL characters", "string_nul"),
        ({"k\x00": "v"}, "keys must not contain NUL characters", "string_nul"),
        ({"k": "\ud800"}, "strings must be valid UTF-8 (no lone surrogates)", "string_unicode"),
    ],
)  # fmt: skip
def test_the_limits_hold_for_every_type(given: dict[str, Any], msg: str, type_: str) -> None:
    assert refusal(AuthType.custom, given) == {"loc": ["body", "credentials"], "msg": msg, "type": type_}


def test_the_refreshable_types_are_the_ones_with_a_refresh_token_and_token_url() -> None:
    assert {
        AuthType.oauth_token_refresh,
        AuthType.oauth_token_refresh_rotation,
        AuthType.access_token_refresh,
    } == secrets.REFRESHABLE


def test_the_masked_view_keeps_four_characters_of_long_secrets_and_shows_public_fields() -> None:
    shown = secrets.masked(
        {"client_id": "client-1", "client_secret": "cs_0123456789abcdef", "api_key": "short", "extra": 42}
    )

    assert shown == {
        "client_id": "client-1",
        "client_secret": "***************cdef",
        "api_key": "*****",
        "extra": "********",
    }
    current = {"api_key": "sk_0123456789abcdef"}
    assert secrets.masked_fields_sent_back(current, {"api_key": "***************cdef"}) == ["api_key"]
    assert secrets.masked_fields_sent_back(current, {"api_key": "sk_new"}) == []


@pytest.mark.parametrize("length", [1, 8, 9, 12, 15])
def test_secrets_under_sixteen_characters_are_masked_completely(length: int) -> None:
    password = "Passw0rd!xyzABCD"[:length]

    assert secrets.masked({"password": password}, AuthType.basic_auth) == {"password": "*" * length}


def test_sixteen_characters_keep_their_last_four() -> None:
    assert secrets.mask("0123456789abcdef") == "************cdef"


def test_every_custom_field_is_masked_even_one_named_like_a_public_field() -> None:
    shown = secrets.masked(
        {"client_id": "cid-0123456789abcdef", "public_key": "pk", "username": "root", "n": 1}, AuthType.custom
    )

    assert shown == {"client_id": "****************cdef", "public_key": "**", "username": "****", "n": "********"}


def test_each_auth_type_describes_its_required_fields_first() -> None:
    described = secrets.describe()

    assert set(described) == {t.value for t in AuthType}
    oauth = described["oauth_token_refresh"]
    assert [f["name"] for f in oauth["fields"] if f["required"]] == [
        "access_token",
        "refresh_token",
        "token_url",
        "client_id",
    ]
    assert oauth["refreshable"] is True
    assert [f["name"] for f in described["custom"]["fields"] if f["required"]] == []
    assert {f["name"]: f["secret"] for f in described["basic_auth"]["fields"]}["password"] is True
