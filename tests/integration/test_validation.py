"""Every limit, enum and default of the seed at its boundaries, and every error shape, asserted exactly.

A 422 is ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`` as FastAPI answers it: ``loc`` and
``type`` are what Mielto clients parse, so they are compared with FastAPI's (pydantic's) values; ``msg`` is
compared with the service's own wording where the service defines one.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from db.tables import Credential
from devtools.stack import BaoServer
from service.config import Settings
from service.credentials.secrets import MAX_SECRET_BYTES
from tests.support.api import API, Caller, MakeCaller, create, new_credential
from vault.store import WORKSPACES_PREFIX, CallContext, SecretStore

AUTH_TYPES = [
    "api_key",
    "oauth_token",
    "oauth_token_refresh",
    "oauth_token_refresh_rotation",
    "basic_auth",
    "access_token",
    "access_token_refresh",
    "public_key_secret",
    "connection_string",
    "custom",
]
CREDENTIAL_TYPES = ["integration", "llm", "storage", "vector_store", "auth_provider", "custom"]
REQUIRED = ["label", "auth_type", "credential_scope", "credentials"]
# (field, maxLength) of every length-limited string of CredentialCreate in the seed.
MAX_LENGTHS = [("label", 100), ("description", 255), ("credential_scope", 255), ("provider", 255), ("user_id", 255)]
JSON = {"content-type": "application/json"}

KvKeys = Callable[[str], Awaitable[list[str]]]


# --- helpers ---------------------------------------------------------------------------------------------------


def the_error(response: httpx.Response) -> dict[str, Any]:
    """The one error of a FastAPI-shaped 422 (and nothing else in the body)."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], list), body
    assert len(body["detail"]) == 1, body
    error: dict[str, Any] = body["detail"][0]
    assert set(error) == {"loc", "msg", "type"}, error
    assert isinstance(error["msg"], str), error
    return error


def too_long(loc: list[str | int], n: int) -> dict[str, Any]:
    return {"loc": loc, "msg": f"String should have at most {n} characters", "type": "string_too_long"}


def not_a_string(field: str, got: str) -> dict[str, Any]:
    return {"loc": ["body", field], "msg": f"Input should be a valid string, not {got}", "type": "string_type"}


def not_an_object(got: str) -> dict[str, Any]:
    return {
        "loc": ["body", "credentials"],
        "msg": f"Input should be a valid dictionary, not {got}",
        "type": "dict_type",
    }


def extra(field: str) -> dict[str, Any]:
    return {"loc": ["body", field], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}


def bad_enum(loc: list[str | int], value: str) -> dict[str, Any]:
    return {"loc": loc, "msg": f"Input should be one of the allowed values, not {value!r}", "type": "enum"}


NOT_JSON = {"loc": ["body"], "msg": "JSON decode error: the body is not valid JSON", "type": "json_invalid"}


async def fetch(client: httpx.AsyncClient, caller: Caller, credential_id: str) -> dict[str, Any]:
    response = await client.get(f"{API}/{credential_id}", headers=caller.headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def listed_total(client: httpx.AsyncClient, caller: Caller) -> int:
    response = await client.get(API, headers=caller.headers)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


@pytest.fixture
async def kv_keys(bao: BaoServer) -> AsyncIterator[KvKeys]:
    """The KV entries of a workspace, read from Vault directly (not through the API)."""
    store = SecretStore.connect(bao.addr, bao.token, workers=1, timeout=10)

    async def keys(workspace: str) -> list[str]:
        ctx = CallContext(request_id="test", actor="test", workspace=workspace)
        return await store.list_keys(ctx, f"{WORKSPACES_PREFIX}/{quote(workspace, safe='')}/credentials")

    try:
        yield keys
    finally:
        await store.aclose()


# --- create: string lengths --------------------------------------------------------------------------------------


# credential_scope takes only 'workspace', 'user' or 'workspace_member' (issue 3; tests/test_scope.py).
@pytest.mark.parametrize(("field", "limit"), [(f, n) for f, n in MAX_LENGTHS if f != "credential_scope"])
async def test_create_accepts_a_string_of_exactly_the_maximum_length(
    client: httpx.AsyncClient, caller: Caller, field: str, limit: int
) -> None:
    value = "x" * limit
    created = await create(client, caller, **{field: value})

    assert created[field] == value
    assert (await fetch(client, caller, created["id"]))[field] == value


@pytest.mark.parametrize(("field", "limit"), MAX_LENGTHS)
async def test_create_refuses_a_string_one_over_the_maximum_length(
    client: httpx.AsyncClient, caller: Caller, field: str, limit: int
) -> None:
    response = await client.post(API, json=new_credential(**{field: "x" * (limit + 1)}), headers=caller.headers)

    assert the_error(response) == too_long(["body", field], limit)


async def test_create_accepts_a_label_of_one_character(client: httpx.AsyncClient, caller: Caller) -> None:
    assert (await create(client, caller, label="x"))["label"] == "x"


async def test_create_refuses_an_empty_label(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.post(API, json=new_credential(label=""), headers=caller.headers)

    # pydantic's wording: "character", singular, for a minimum of 1.
    assert the_error(response) == {
        "loc": ["body", "label"],
        "msg": "String should have at least 1 character",
        "type": "string_too_short",
    }


async def test_lengths_count_characters_not_bytes(client: httpx.AsyncClient, caller: Caller) -> None:
    """maxLength counts code points, as pydantic does: 100 emoji (400 bytes of UTF-8) are a valid label."""
    assert (await create(client, caller, label="😀" * 100))["label"] == "😀" * 100
    assert (await create(client, caller, label="€" * 100))["label"] == "€" * 100

    response = await client.post(API, json=new_credential(label="€" * 101), headers=caller.headers)
    assert the_error(response) == too_long(["body", "label"], 100)


async def test_an_empty_credential_scope_is_refused_with_the_allowed_values(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    """The seed gives credential_scope a maxLength only; the service takes only the three values it names."""
    response = await client.post(API, json=new_credential(credential_scope=""), headers=caller.headers)
    assert the_error(response) == {
        "loc": ["body", "credential_scope"],
        "msg": "Input should be 'workspace', 'user' or 'workspace_member'",
        "type": "literal_error",
    }


@pytest.mark.parametrize("field", ["description", "credential_type", "user_id"])
async def test_create_accepts_null_for_the_nullable_fields(
    client: httpx.AsyncClient, caller: Caller, field: str
) -> None:
    created = await create(client, caller, **{field: None})

    assert created[field] is None


# --- create: enums ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("auth_type", v) for v in AUTH_TYPES] + [("credential_type", v) for v in [*CREDENTIAL_TYPES, None]],
)
async def test_create_accepts_every_enum_value(
    client: httpx.AsyncClient, caller: Caller, field: str, value: str | None
) -> None:
    created = await create(client, caller, **{field: value})

    assert created[field] == value
    assert (await fetch(client, caller, created["id"]))[field] == value


@pytest.mark.parametrize(
    ("field", "value"),
    [("auth_type", v) for v in ("oauth2", "API_KEY", "api-key", "")]
    + [("credential_type", v) for v in ("model", "LLM", "INTEGRATION", "")],
)
async def test_create_refuses_an_unknown_enum_value(
    client: httpx.AsyncClient, caller: Caller, field: str, value: str
) -> None:
    response = await client.post(API, json=new_credential(**{field: value}), headers=caller.headers)

    assert the_error(response) == bad_enum(["body", field], value)


@pytest.mark.parametrize(("field", "value"), [("auth_type", 1), ("auth_type", None), ("credential_type", 1)])
async def test_an_enum_field_of_the_wrong_json_type_is_an_enum_error(
    client: httpx.AsyncClient, caller: Caller, field: str, value: object
) -> None:
    """FastAPI answers type "enum" for an enum field given a number (or null where null is not allowed)."""
    response = await client.post(API, json=new_credential(**{field: value}), headers=caller.headers)

    error = the_error(response)
    assert error["loc"] == ["body", field]
    assert error["type"] == "enum"


# --- create: required, wrong types, unknown fields ---------------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED)
async def test_create_refuses_a_body_missing_a_required_field(
    client: httpx.AsyncClient, caller: Caller, field: str
) -> None:
    body = new_credential()
    del body[field]
    response = await client.post(API, json=body, headers=caller.headers)

    assert the_error(response) == {"loc": ["body", field], "msg": "Field required", "type": "missing"}


@pytest.mark.parametrize(
    ("field", "value", "got"),
    [
        ("label", 42, "integer"),
        ("label", True, "boolean"),
        ("label", None, "null"),
        ("credential_scope", 7, "integer"),
        ("description", 42, "integer"),
        ("user_id", ["usr_1"], "list"),
        ("provider", {"name": "stripe"}, "dictionary"),
    ],
)
async def test_create_refuses_a_string_field_of_another_type(
    client: httpx.AsyncClient, caller: Caller, field: str, value: object, got: str
) -> None:
    response = await client.post(API, json=new_credential(**{field: value}), headers=caller.headers)

    assert the_error(response) == not_a_string(field, got)


@pytest.mark.parametrize(
    ("value", "got"), [(["sk_live_x"], "list"), ("sk_live_x", "string"), (42, "integer"), (None, "null")]
)
async def test_create_refuses_credentials_that_are_not_an_object(
    client: httpx.AsyncClient, caller: Caller, value: object, got: str
) -> None:
    response = await client.post(API, json=new_credential(credentials=value), headers=caller.headers)

    assert the_error(response) == not_an_object(got)


@pytest.mark.parametrize("field", ["workspace_id", "status", "id", "created_by", "secret", "Label"])
async def test_create_refuses_an_unknown_field(client: httpx.AsyncClient, caller: Caller, field: str) -> None:
    response = await client.post(API, json=new_credential(**{field: "x"}), headers=caller.headers)

    assert the_error(response) == extra(field)


# --- create: the body as a whole -------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"{not json", b'{"label": "a"', b"label=a&auth_type=api_key", b"\xff\xfe"])
async def test_a_body_that_is_not_json_is_json_invalid(
    client: httpx.AsyncClient, caller: Caller, content: bytes
) -> None:
    response = await client.post(API, content=content, headers={**caller.headers, **JSON})

    assert the_error(response) == NOT_JSON


async def test_an_empty_body_is_a_missing_body(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.post(API, content=b"", headers={**caller.headers, **JSON})

    assert the_error(response) == {"loc": ["body"], "msg": "Field required", "type": "missing"}


@pytest.mark.parametrize("content", [b"[1]", b"null", b'"label"', b"42"])
async def test_a_json_body_that_is_not_an_object_is_refused_at_body(
    client: httpx.AsyncClient, caller: Caller, content: bytes
) -> None:
    response = await client.post(API, content=content, headers={**caller.headers, **JSON})

    error = the_error(response)
    assert error["loc"] == ["body"]
    assert error["type"] == "model_attributes_type"  # FastAPI's type for a body model given a non-object


# --- create: defaults --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "stored"),
    [({}, "custom"), ({"provider": None}, "custom"), ({"provider": "stripe"}, "stripe"), ({"provider": ""}, "")],
    ids=["omitted", "null", "given", "empty"],
)
async def test_provider_defaults_to_custom(
    client: httpx.AsyncClient, caller: Caller, body: dict[str, object], stored: str
) -> None:
    created = await create(client, caller, **body)

    assert created["provider"] == stored
    assert (await fetch(client, caller, created["id"]))["provider"] == stored


async def test_create_sets_the_server_side_defaults(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller)

    assert created["status"] == "active"
    assert created["description"] is None
    assert created["credential_type"] is None
    assert created["user_id"] is None
    assert created["expires_at"] is None
    assert created["last_used_at"] is None


# --- create: the secret's size and the body's size ---------------------------------------------------------------


async def test_credentials_of_exactly_the_maximum_encoded_size_are_accepted(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    # {"api_key":"<n x>"} encodes to n + 14 bytes of compact JSON.
    created = await create(client, caller, credentials={"api_key": "x" * (MAX_SECRET_BYTES - 14)})

    assert created["label"] == "Stripe production"


async def test_credentials_one_byte_over_the_maximum_encoded_size_are_refused(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    assert MAX_SECRET_BYTES == 64 * 1024
    response = await client.post(
        API, json=new_credential(credentials={"api_key": "x" * (MAX_SECRET_BYTES - 13)}), headers=caller.headers
    )

    assert the_error(response) == {
        "loc": ["body", "credentials"],
        "msg": f"credentials must be at most {MAX_SECRET_BYTES} bytes as JSON, got {MAX_SECRET_BYTES + 1}",
        "type": "too_long",
    }


async def test_empty_credentials_are_refused(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.post(API, json=new_credential(credentials={}), headers=caller.headers)

    assert the_error(response) == {
        "loc": ["body", "credentials"],
        "msg": "credentials must not be empty",
        "type": "value_error",
    }


def body_of_size(size: int) -> bytes:
    """A syntactically valid create body of exactly ``size`` bytes (its secret is far over the 64 KiB limit)."""
    head = b'{"label":"a","auth_type":"api_key","credential_scope":"workspace","credentials":{"api_key":"'
    tail = b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def test_a_body_of_exactly_the_maximum_size_is_read(
    client: httpx.AsyncClient, caller: Caller, settings: Settings
) -> None:
    assert settings.http.max_body_bytes == 256 * 1024
    content = body_of_size(settings.http.max_body_bytes)
    response = await client.post(API, content=content, headers={**caller.headers, **JSON})

    # Read and validated (so not 413); refused for the secret's own limit.
    error = the_error(response)
    assert error["loc"] == ["body", "credentials"]
    assert error["type"] == "too_long"


async def test_a_body_over_the_maximum_size_is_413(
    client: httpx.AsyncClient, caller: Caller, settings: Settings
) -> None:
    content = body_of_size(settings.http.max_body_bytes + 1)
    response = await client.post(API, content=content, headers={**caller.headers, **JSON})

    assert response.status_code == 413
    assert response.json() == {"detail": "Request Entity Too Large"}
    assert await listed_total(client, caller) == 0


async def test_a_streamed_body_over_the_maximum_size_is_413(
    client: httpx.AsyncClient, caller: Caller, settings: Settings
) -> None:
    """Without Content-Length (chunked), the limit still holds."""
    content = body_of_size(settings.http.max_body_bytes + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 8192):
            yield content[start : start + 8192]

    response = await client.post(API, content=chunks(), headers={**caller.headers, **JSON})

    assert response.status_code == 413
    assert response.json() == {"detail": "Request Entity Too Large"}


# --- create: what a refused request leaves behind and says -------------------------------------------------------

INVALID_BODIES: list[tuple[str, dict[str, object]]] = [
    ("label_too_long", {"label": "x" * 101}),
    ("label_empty", {"label": ""}),
    ("unknown_field", {"workspace_id": "wsp_other"}),
    ("bad_auth_type", {"auth_type": "oauth2"}),
    ("bad_credential_type", {"credential_type": "model"}),
    ("description_too_long", {"description": "x" * 256}),
    ("secret_too_large", {"credentials": {"k": "x" * MAX_SECRET_BYTES}}),
]


@pytest.mark.parametrize(("case", "overrides"), INVALID_BODIES, ids=[case for case, _ in INVALID_BODIES])
async def test_a_422_never_echoes_the_secret(
    client: httpx.AsyncClient, caller: Caller, case: str, overrides: dict[str, object]
) -> None:
    secret = f"sk_live_{secrets.token_hex(16)}"
    given = overrides.get("credentials", {})
    assert isinstance(given, dict)
    credentials = {**given, "api_key": secret, "note": secret}
    body = new_credential(**{**overrides, "credentials": credentials})
    response = await client.post(API, json=body, headers=caller.headers)

    assert response.status_code == 422, (case, response.text)
    assert secret not in response.text
    assert secret[8:] not in response.text
    assert all(secret not in value for value in response.headers.values())


async def test_credentials_sent_as_a_string_are_refused_without_echoing_them(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    secret = f"sk_live_{secrets.token_hex(16)}"
    response = await client.post(API, json=new_credential(credentials=secret), headers=caller.headers)

    assert response.status_code == 422, response.text
    assert secret not in response.text


async def test_a_refused_create_stores_nothing(client: httpx.AsyncClient, caller: Caller, kv_keys: KvKeys) -> None:
    headers = caller.headers
    refused: list[dict[str, object]] = [overrides for _, overrides in INVALID_BODIES] + [{"credentials": {}}]
    for overrides in refused:
        response = await client.post(API, json=new_credential(**overrides), headers=headers)
        assert response.status_code == 422, response.text
    for field in REQUIRED:
        body = new_credential()
        del body[field]
        assert (await client.post(API, json=body, headers=headers)).status_code == 422
    assert (await client.post(API, content=b"{nope", headers={**headers, **JSON})).status_code == 422
    long_header = {**headers, "X-Workspace-Id": "w" * 256}
    assert (await client.post(API, json=new_credential(), headers=long_header)).status_code == 422

    assert await listed_total(client, caller) == 0
    assert await Credential.count() == 0  # not even a pending row
    assert await kv_keys(caller.workspace) == []


# --- who is told about validation --------------------------------------------------------------------------------


async def test_an_anonymous_caller_gets_401_before_any_validation(client: httpx.AsyncClient) -> None:
    response = await client.post(API, json=new_credential(label="x" * 101))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "Not authenticated"}


async def test_a_caller_without_write_gets_403_before_any_validation(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    reader = await make_caller(permissions=("read",))
    response = await client.post(API, json=new_credential(label="x" * 101), headers=reader.headers)

    assert response.status_code == 403
    assert response.json() == {"detail": "This API key lacks the 'write' permission"}


# --- list: query parameters --------------------------------------------------------------------------------------


async def test_list_defaults(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.get(API, headers=caller.headers)

    assert response.status_code == 200
    assert response.json() == {"credentials": [], "total": 0, "page": 1, "size": 100}


@pytest.mark.parametrize(("skip", "page"), [(0, 1), (1, 1), (5, 2), (1_000_000, 200_001)])
async def test_list_accepts_skip_from_zero(client: httpx.AsyncClient, caller: Caller, skip: int, page: int) -> None:
    await create(client, caller)
    response = await client.get(API, params={"skip": skip, "limit": 5}, headers=caller.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["page"], body["size"]) == (1, page, 5)
    assert len(body["credentials"]) == (1 if skip == 0 else 0)


async def test_list_refuses_a_negative_skip(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.get(API, params={"skip": -1}, headers=caller.headers)

    assert the_error(response) == {
        "loc": ["query", "skip"],
        "msg": "Input should be greater than or equal to 0",
        "type": "greater_than_equal",
    }


@pytest.mark.parametrize("limit", [1, 1000])
async def test_list_accepts_limit_at_its_bounds(client: httpx.AsyncClient, caller: Caller, limit: int) -> None:
    await create(client, caller, label="first")
    await create(client, caller, label="second")
    response = await client.get(API, params={"limit": limit}, headers=caller.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == limit
    assert body["total"] == 2
    assert len(body["credentials"]) == min(limit, 2)


@pytest.mark.parametrize(
    ("limit", "error"),
    [
        (0, {"msg": "Input should be greater than or equal to 1", "type": "greater_than_equal"}),
        (-5, {"msg": "Input should be greater than or equal to 1", "type": "greater_than_equal"}),
        (1001, {"msg": "Input should be less than or equal to 1000", "type": "less_than_equal"}),
    ],
)
async def test_list_refuses_limit_out_of_bounds(
    client: httpx.AsyncClient, caller: Caller, limit: int, error: dict[str, str]
) -> None:
    response = await client.get(API, params={"limit": limit}, headers=caller.headers)

    assert the_error(response) == {"loc": ["query", "limit"], **error}


@pytest.mark.parametrize(("name", "value"), [("limit", "abc"), ("limit", "1.5"), ("skip", "abc"), ("skip", "")])
async def test_list_refuses_a_non_integer(client: httpx.AsyncClient, caller: Caller, name: str, value: str) -> None:
    response = await client.get(API, params={name: value}, headers=caller.headers)

    assert the_error(response) == {
        "loc": ["query", name],
        "msg": "Input should be a valid integer",
        "type": "int_parsing",
    }


async def test_list_reports_every_bad_query_parameter(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.get(API, params={"skip": -1, "limit": 0}, headers=caller.headers)

    assert response.status_code == 422
    assert sorted(response.json()["detail"], key=lambda error: error["loc"]) == [
        {"loc": ["query", "limit"], "msg": "Input should be greater than or equal to 1", "type": "greater_than_equal"},
        {"loc": ["query", "skip"], "msg": "Input should be greater than or equal to 0", "type": "greater_than_equal"},
    ]


@pytest.mark.parametrize(
    ("field", "value", "other"),
    [("credential_type", v, "llm" if v != "llm" else "storage") for v in CREDENTIAL_TYPES]
    + [("auth_type", v, "custom" if v != "custom" else "api_key") for v in AUTH_TYPES],
)
async def test_list_filters_on_every_enum_value(
    client: httpx.AsyncClient, caller: Caller, field: str, value: str, other: str
) -> None:
    await create(client, caller, **{field: value})
    await create(client, caller, **{field: other})
    response = await client.get(API, params={field: value}, headers=caller.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 1
    assert [item[field] for item in body["credentials"]] == [value]


@pytest.mark.parametrize(("name", "value"), [("credential_type", "model"), ("auth_type", "oauth2"), ("auth_type", "")])
async def test_list_refuses_an_unknown_enum_filter(
    client: httpx.AsyncClient, caller: Caller, name: str, value: str
) -> None:
    response = await client.get(API, params={name: value}, headers=caller.headers)

    assert the_error(response) == bad_enum(["query", name], value)


@pytest.mark.parametrize(("name", "limit"), [("status", 32), ("search", 255)])
async def test_list_string_filters_at_their_bounds(
    client: httpx.AsyncClient, caller: Caller, name: str, limit: int
) -> None:
    accepted = await client.get(API, params={name: "x" * limit}, headers=caller.headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["total"] == 0

    refused = await client.get(API, params={name: "x" * (limit + 1)}, headers=caller.headers)
    assert the_error(refused) == too_long(["query", name], limit)


# --- the X-Workspace-Id header -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_workspace_header_over_255_characters_is_422(
    client: httpx.AsyncClient, caller: Caller, method: str
) -> None:
    headers = {**caller.headers, "X-Workspace-Id": "w" * 256}
    response = await client.request(method, API, json=new_credential() if method == "POST" else None, headers=headers)

    assert the_error(response) == too_long(["header", "X-Workspace-Id"], 255)


async def test_a_workspace_header_of_255_characters_is_valid_but_foreign(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    response = await client.get(API, headers={**caller.headers, "X-Workspace-Id": "w" * 255})

    assert response.status_code == 403
    assert response.json() == {"detail": "X-Workspace-Id does not match the API key's workspace"}


async def test_the_callers_own_workspace_header_is_accepted(client: httpx.AsyncClient, caller: Caller) -> None:
    headers = {**caller.headers, "X-Workspace-Id": caller.workspace}
    response = await client.post(API, json=new_credential(), headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["workspace_id"] == caller.workspace


# --- update ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"label": "x" * 101}, too_long(["body", "label"], 100)),
        (
            {"label": ""},
            {"loc": ["body", "label"], "msg": "String should have at least 1 character", "type": "string_too_short"},
        ),
        ({"description": "x" * 256}, too_long(["body", "description"], 255)),
        ({"credential_scope": "x" * 256}, too_long(["body", "credential_scope"], 255)),
        ({"label": 5}, not_a_string("label", "integer")),
        ({"auth_type": "custom"}, extra("auth_type")),
        ({"credential_type": "llm"}, extra("credential_type")),
        ({"provider": "stripe"}, extra("provider")),
        ({"user_id": "usr_1"}, extra("user_id")),
        ({"status": "inactive"}, extra("status")),
        ({"workspace_id": "wsp_other"}, extra("workspace_id")),
        ({"credentials": ["sk_live_x"]}, not_an_object("list")),
        (
            {"credentials": {}},
            {"loc": ["body", "credentials"], "msg": "credentials must not be empty", "type": "value_error"},
        ),
        (
            {"credentials": {"api_key": "x" * (MAX_SECRET_BYTES - 13)}},
            {
                "loc": ["body", "credentials"],
                "msg": f"credentials must be at most {MAX_SECRET_BYTES} bytes as JSON, got {MAX_SECRET_BYTES + 1}",
                "type": "too_long",
            },
        ),
    ],
    ids=[
        "label_101", "label_empty", "description_256", "scope_256", "label_int", "auth_type", "credential_type",
        "provider", "user_id", "status", "workspace_id", "credentials_list", "credentials_empty", "credentials_large",
    ],
)  # fmt: skip
async def test_update_refuses_an_invalid_body_and_changes_nothing(
    client: httpx.AsyncClient, caller: Caller, body: dict[str, object], expected: dict[str, Any]
) -> None:
    created = await create(client, caller, description="before")
    response = await client.put(f"{API}/{created['id']}", json=body, headers=caller.headers)

    assert the_error(response) == expected
    assert await fetch(client, caller, created["id"]) == created


async def test_update_refuses_a_body_that_is_not_json(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller)
    response = await client.put(f"{API}/{created['id']}", content=b"nope", headers={**caller.headers, **JSON})

    assert the_error(response) == NOT_JSON


async def test_update_accepts_the_limits_exactly(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller)
    body = {"label": "l" * 100, "description": "d" * 255}
    response = await client.put(f"{API}/{created['id']}", json=body, headers=caller.headers)

    assert response.status_code == 200, response.text
    assert {name: response.json()[name] for name in body} == body


async def test_update_with_nulls_changes_nothing(client: httpx.AsyncClient, caller: Caller) -> None:
    created = await create(client, caller, description="kept")
    body = {"label": None, "description": None, "credential_scope": None, "credentials": None}
    response = await client.put(f"{API}/{created['id']}", json=body, headers=caller.headers)

    assert response.status_code == 200, response.text
    assert response.json() == created


# --- path and method ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("GET", "", None), ("PUT", "", {"label": "x"}), ("DELETE", "", None), ("POST", "/reveal", None)],
)
@pytest.mark.parametrize("credential_id", ["not-a-uuid", "1", "x" * 1000])
async def test_a_malformed_credential_id_is_not_found(
    client: httpx.AsyncClient, caller: Caller, method: str, suffix: str, body: object, credential_id: str
) -> None:
    response = await client.request(method, f"{API}/{credential_id}{suffix}", json=body, headers=caller.headers)

    assert response.status_code == 404
    assert response.json() == {"detail": "Credential not found"}


async def test_an_unsupported_method_is_405_in_the_detail_shape(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.patch(f"{API}/00000000-0000-0000-0000-000000000000", json={}, headers=caller.headers)

    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}


async def test_an_unknown_non_ascii_field_inside_the_body_is_a_422_not_a_500(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    # Found by schemathesis: Litestar took this msgspec refusal for a server error.
    created = await create(client, caller)
    body = '{"proxy": {"\\u00fa": true, "base_url": "https://api.example.com"}}'
    headers = {**caller.headers, "Content-Type": "application/json"}

    answer = await client.put(f"{API}/{created['id']}", content=body, headers=headers)

    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["type"] == "extra_forbidden"


async def test_an_expiry_without_a_utc_offset_is_refused_on_create_and_update_and_changes_nothing(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    """A naive date-time used to be stored (read as UTC by Postgres) and then answered with a 500, the write done,
    when it was compared with the clock; it is a 422 now, as for API keys."""
    naive = "2030-01-01T00:00:00"
    refused = await client.post(API, json=new_credential(expires_at=naive), headers=caller.headers)
    zone = {"loc": ["body", "expires_at"], "msg": "Input should have timezone info", "type": "timezone_aware"}
    assert the_error(refused) == zone
    created = await create(client, caller, expires_at="2030-01-01T00:00:00+02:00")
    expiry = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert expiry == datetime(2029, 12, 31, 22, tzinfo=UTC)
    before = (await client.get(f"{API}/{created['id']}", headers=caller.headers)).json()
    update = await client.put(
        f"{API}/{created['id']}", json={"expires_at": naive, "label": "new"}, headers=caller.headers
    )
    assert the_error(update) == zone
    assert (await client.get(f"{API}/{created['id']}", headers=caller.headers)).json() == before
