"""The OpenAPI document at /schema/openapi.json against the seed (``../shared/spec/create-credential.openapi.yaml``).

For the create operation the document must match the seed field for field: property names, required lists,
types, limits, enums and defaults. Nullable types are compared after normalisation, since the seed (FastAPI)
writes ``anyOf: [X, null]`` where other generators write ``oneOf: [X, null]`` or ``type: [X, "null"]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.app import create_app
from service.config import Settings

# The seed as Mielto publishes it, vendored so a clone tests on its own; the shared copy is checked against it.
SEED = Path(__file__).resolve().parents[1] / "seed" / "create-credential.openapi.yaml"
SHARED_SEED = Path(__file__).resolve().parents[3] / "shared" / "spec" / "create-credential.openapi.yaml"
CREATE_PATH = "/api/v1/credentials"
ITEM_PATH = "/api/v1/credentials/{credential_id}"
REVEAL_PATH = "/api/v1/credentials/{credential_id}/reveal"

# Every operation of the credentials API, with its operationId (FastAPI's default naming, as Mielto publishes).
CREDENTIAL_OPERATIONS = {
    (CREATE_PATH, "post"): "create_credential_api_v1_credentials_post",
    (CREATE_PATH, "get"): "list_credentials_api_v1_credentials_get",
    (ITEM_PATH, "get"): "get_credential_api_v1_credentials__credential_id__get",
    (ITEM_PATH, "put"): "update_credential_api_v1_credentials__credential_id__put",
    (ITEM_PATH, "delete"): "delete_credential_api_v1_credentials__credential_id__delete",
    (REVEAL_PATH, "post"): "reveal_credential_api_v1_credentials__credential_id__reveal_post",
}
# Additions beyond Mielto's API (secret lifecycle): documented, held to the same conventions, with clean ids
# (the handler's name): only the seed's operations keep FastAPI's generated ones.
ADDED_OPERATIONS = {
    (
        "/api/v1/credentials/{credential_id}/restore",
        "post",
    ): "restore_credential",
    (
        "/api/v1/credentials/{credential_id}/versions",
        "get",
    ): "list_versions",
    ("/api/v1/credentials/{credential_id}/versions/{version}/restore", "post"): ("restore_version"),
    (
        "/api/v1/credentials/{credential_id}/disable",
        "post",
    ): "disable_credential",
    (
        "/api/v1/credentials/{credential_id}/enable",
        "post",
    ): "enable_credential",
    (
        "/api/v1/credentials/{credential_id}/revoke",
        "post",
    ): "revoke_credential",
    (
        "/api/v1/credentials/{credential_id}/refresh",
        "post",
    ): "refresh_credential",
}
AUTH_TYPES_OPERATION = ("/api/v1/credentials/auth-types", "get")
HEALTH_OPERATIONS = [("/health/live", "get"), ("/health/ready", "get")]
# Fields added to Mielto's schemas (optional and nullable, never required), documented in the README.
ADDED_FIELDS = {
    "CredentialCreate": {
        "expires_at": {"type": "string", "format": "date-time", "nullable": True},
        "proxy": {"$ref": "ProxyConfig", "nullable": True},
    },
    "CredentialRead": {
        "status_reason": {"type": "string", "nullable": True},
        "status_changed_at": {"type": "string", "format": "date-time", "nullable": True},
        "proxy": {"anyOf": [{"$ref": "ProxyView", "nullable": False}], "nullable": False},
    },
}
# The credential proxy, grants, usage and checks (issue 14).
PROXY_PATH = "/api/v1/proxy/{credential_id}/{path}"
PROXY_OPERATIONS = {
    *((PROXY_PATH, method) for method in ("get", "head", "post", "put", "patch", "delete", "options")),
    ("/api/v1/credentials/{credential_id}/grants", "post"),
    ("/api/v1/credentials/{credential_id}/grants", "get"),
    ("/api/v1/credentials/{credential_id}/grants/{grant_id}", "delete"),
    ("/api/v1/credentials/{credential_id}/usage", "get"),
    ("/api/v1/credentials/{credential_id}/check", "post"),
}
# API keys and the session (issue 3): Mielto's paths, FastAPI-style operationIds.
ACCESS_OPERATIONS = {
    ("/api/v1/api-keys", "post"): "create_api_key_api_v1_api_keys_post",
    ("/api/v1/api-keys", "get"): "list_api_keys_api_v1_api_keys_get",
    ("/api/v1/api-keys/{key_id}", "delete"): "delete_api_key_api_v1_api_keys__key_id__delete",
    ("/api/v1/auth/session", "get"): "get_session_api_v1_auth_session_get",
}
# Webhook subscriptions (issue 15).
WEBHOOK_OPERATIONS = {
    ("/api/v1/webhooks", "post"),
    ("/api/v1/webhooks", "get"),
    ("/api/v1/webhooks/{webhook_id}", "get"),
    ("/api/v1/webhooks/{webhook_id}", "delete"),
    ("/api/v1/webhooks/{webhook_id}/rotate-secret", "post"),
    ("/api/v1/webhooks/{webhook_id}/test", "post"),
    ("/api/v1/webhooks/{webhook_id}/deliveries", "get"),
    ("/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", "post"),
}
# Responses the service declares beyond the seed's (200, 404, 422): its own auth and backend errors.
SERVICE_ERROR_CODES = {"400", "401", "403", "413", "503"}
SECURITY = [{"DualAuthScheme": []}, {"ApiKeyHeader": []}]

# Keywords that carry meaning for a client; titles, descriptions and examples are not compared.
COMPARED = ("type", "$ref", "format", "enum", "maxLength", "minLength", "maximum", "minimum", "default")
NULL = {"type": "null"}


# --- normalisation -----------------------------------------------------------------------------------------------


def normalise(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema reduced to what a client relies on, with every spelling of "X or null" made the same.

    ``anyOf: [X, null]``, ``oneOf: [X, null]`` and ``type: [X, "null"]`` all become X plus ``nullable: True``.
    Keywords written beside the ``anyOf``/``oneOf`` (e.g. ``maxLength``) are merged into X: string and number
    keywords do not apply to null, so ``{oneOf: [string, null], maxLength: 255}`` means exactly
    ``anyOf: [{type: string, maxLength: 255}, null]``.
    """
    schema = dict(schema)
    nullable = False
    for union in ("anyOf", "oneOf"):
        if union not in schema:
            continue
        branches = schema.pop(union)
        others = [branch for branch in branches if branch != NULL]
        if len(others) == 1 and len(branches) == 2:
            nullable = True
            schema = {**others[0], **{key: value for key, value in schema.items() if key in COMPARED}}
        else:
            rendered = sorted((normalise(branch) for branch in branches), key=json.dumps)
            return {"anyOf": rendered, "nullable": False}
    kind = schema.get("type")
    if isinstance(kind, list):
        nullable = nullable or "null" in kind
        rest = sorted(item for item in kind if item != "null")
        schema["type"] = rest[0] if len(rest) == 1 else rest
    out: dict[str, Any] = {key: schema[key] for key in COMPARED if key in schema}
    if "$ref" in out:
        out["$ref"] = out["$ref"].rsplit("/", 1)[-1]
    if "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        out["additionalProperties"] = True if extra in ({}, True) else normalise(extra)
    if "items" in schema:
        out["items"] = normalise(schema["items"])
    out["nullable"] = nullable
    return out


def normalised_properties(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: normalise(prop) for name, prop in schema.get("properties", {}).items()}


def test_the_normaliser_treats_every_nullable_spelling_alike() -> None:
    expected = {"type": "string", "maxLength": 255, "nullable": True}
    assert normalise({"anyOf": [{"type": "string", "maxLength": 255}, {"type": "null"}], "title": "X"}) == expected
    assert normalise({"oneOf": [{"type": "string"}, {"type": "null"}], "maxLength": 255}) == expected
    assert normalise({"type": ["string", "null"], "maxLength": 255, "description": "d"}) == expected
    assert normalise({"type": "string", "maxLength": 255}) == {**expected, "nullable": False}
    assert normalise({"type": "object", "additionalProperties": {}}) == normalise(
        {"type": "object", "additionalProperties": True}
    )
    assert normalise({"anyOf": [{"$ref": "#/components/schemas/E"}, {"type": "null"}]}) == {
        "$ref": "E",
        "nullable": True,
    }
    # A nullable rendering that drops a limit is not equivalent.
    assert normalise({"oneOf": [{"type": "string"}, {"type": "null"}]}) != expected


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SEED.read_text())
    return loaded


def test_the_vendored_seed_is_the_shared_one() -> None:
    """Where the project's shared spec sits beside the clone (developers' machines, CI), the copy must match it."""
    if SHARED_SEED.is_file():
        assert SEED.read_bytes() == SHARED_SEED.read_bytes()
    assert yaml.safe_load(SEED.read_text())["paths"]["/api/v1/credentials"]["post"]["operationId"] == (
        "create_credential_api_v1_credentials_post"
    )


@pytest.fixture(scope="module")
async def app_client() -> AsyncIterator[httpx.AsyncClient]:
    """The app without its lifespan: the document needs neither Postgres nor Vault."""
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://nobody@db.invalid/x",
            "VAULT_ADDR": "http://vault.invalid",
            "VAULT_TOKEN": "s.unused",
        }
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as offline:
        yield offline


@pytest.fixture(scope="module")
async def document(app_client: httpx.AsyncClient) -> dict[str, Any]:
    response = await app_client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    loaded: dict[str, Any] = response.json()
    return loaded


def component(doc: dict[str, Any], name: str) -> dict[str, Any]:
    schemas = doc.get("components", {}).get("schemas", {})
    assert name in schemas, f"components.schemas has no {name}; it has {sorted(schemas)}"
    found: dict[str, Any] = schemas[name]
    return found


def operation(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    assert path in doc["paths"], f"{path} is not in the document; paths: {sorted(doc['paths'])}"
    assert method in doc["paths"][path], f"{method.upper()} {path} is not in the document"
    found: dict[str, Any] = doc["paths"][path][method]
    return found


def ref_of(response_or_body: dict[str, Any]) -> str:
    """The component a response or request body refers to, as ``#/components/schemas/Name``."""
    content = response_or_body.get("content", {})
    assert "application/json" in content, f"no application/json content in {response_or_body}"
    ref: str = content["application/json"]["schema"].get("$ref", "")
    return ref


def header_parameter(op: dict[str, Any], name: str) -> dict[str, Any]:
    found = [p for p in op.get("parameters", []) if p["in"] == "header" and p["name"].lower() == name.lower()]
    assert len(found) == 1, f"expected one {name} header parameter, got {op.get('parameters', [])}"
    parameter: dict[str, Any] = found[0]
    return parameter


# --- the document itself -----------------------------------------------------------------------------------------


async def test_the_document_is_served_without_credentials(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/schema/openapi.json")

    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.1")


# --- the create operation's schemas against the seed --------------------------------------------------------------


@pytest.mark.parametrize("name", ["CredentialCreate", "CredentialRead"])
def test_schema_has_the_seeds_property_names(document: dict[str, Any], seed: dict[str, Any], name: str) -> None:
    ours, theirs = component(document, name), seed["components"]["schemas"][name]

    assert set(ours["properties"]) == set(theirs["properties"]) | set(ADDED_FIELDS[name])
    assert ours.get("type") == theirs["type"] == "object"


@pytest.mark.parametrize("name", ["CredentialCreate", "CredentialRead"])
def test_schema_has_the_seeds_required_list(document: dict[str, Any], seed: dict[str, Any], name: str) -> None:
    ours, theirs = component(document, name), seed["components"]["schemas"][name]

    assert set(ours.get("required", [])) == set(theirs["required"])


@pytest.mark.parametrize("name", ["CredentialCreate", "CredentialRead"])
def test_schema_has_the_seeds_types_limits_and_defaults(
    document: dict[str, Any], seed: dict[str, Any], name: str
) -> None:
    """Per property: type (nullable or not), $ref, format, maxLength, minLength, default, additionalProperties."""
    ours = normalised_properties(component(document, name))
    theirs = normalised_properties(seed["components"]["schemas"][name])

    assert ours == {**theirs, **ADDED_FIELDS[name]}


@pytest.mark.parametrize("name", ["AuthType", "CredentialType"])
def test_enum_has_the_seeds_values(document: dict[str, Any], seed: dict[str, Any], name: str) -> None:
    ours, theirs = component(document, name), seed["components"]["schemas"][name]

    assert ours["type"] == theirs["type"] == "string"
    assert ours["enum"] == theirs["enum"]


def test_provider_defaults_to_custom_on_create_only(document: dict[str, Any]) -> None:
    create = normalise(component(document, "CredentialCreate")["properties"]["provider"])
    read = normalise(component(document, "CredentialRead")["properties"]["provider"])

    assert create == {"type": "string", "maxLength": 255, "default": "custom", "nullable": True}
    assert read == {"type": "string", "nullable": False}


def test_no_read_schema_carries_the_secret(document: dict[str, Any]) -> None:
    assert "credentials" not in component(document, "CredentialRead")["properties"]
    listed = normalise(component(document, "CredentialList")["properties"]["credentials"])
    assert listed == {"type": "array", "items": {"$ref": "CredentialRead", "nullable": False}, "nullable": False}


# --- the create operation against the seed -----------------------------------------------------------------------


def test_create_operation_is_declared_as_in_the_seed(document: dict[str, Any], seed: dict[str, Any]) -> None:
    ours, theirs = operation(document, CREATE_PATH, "post"), seed["paths"][CREATE_PATH]["post"]

    assert ours["operationId"] == theirs["operationId"] == "create_credential_api_v1_credentials_post"
    assert ours["tags"] == theirs["tags"]
    assert ours["summary"] == theirs["summary"]
    assert ours["requestBody"]["required"] is True
    assert ref_of(ours["requestBody"]) == ref_of(theirs["requestBody"]) == "#/components/schemas/CredentialCreate"


def test_create_answers_200_with_the_read_schema(document: dict[str, Any]) -> None:
    responses = operation(document, CREATE_PATH, "post")["responses"]

    assert "201" not in responses
    assert ref_of(responses["200"]) == "#/components/schemas/CredentialRead"


def test_create_declares_422_with_the_validation_error_schema(document: dict[str, Any]) -> None:
    responses = operation(document, CREATE_PATH, "post")["responses"]

    assert "422" in responses, f"no 422 response; declared: {sorted(responses)}"
    assert ref_of(responses["422"]) == "#/components/schemas/HTTPValidationError"


def test_create_declares_404(document: dict[str, Any]) -> None:
    responses = operation(document, CREATE_PATH, "post")["responses"]

    assert "404" in responses, f"no 404 response; declared: {sorted(responses)}"


def test_create_declares_only_the_seeds_responses_and_the_services_own_errors(
    document: dict[str, Any], seed: dict[str, Any]
) -> None:
    """No response the service never sends: e.g. Litestar's default 400 ``{status_code, detail, extra}``."""
    ours = set(operation(document, CREATE_PATH, "post")["responses"])
    theirs = set(seed["paths"][CREATE_PATH]["post"]["responses"])

    # 409: a request with the same Idempotency-Key is still running (the service's addition).
    assert ours - SERVICE_ERROR_CODES - {"409"} == theirs == {"200", "404", "422"}


@pytest.mark.parametrize(
    ("path", "method"),
    [
        (CREATE_PATH, "post"),
        ("/api/v1/credentials/{credential_id}/refresh", "post"),
        ("/api/v1/credentials/{credential_id}/restore", "post"),
        ("/api/v1/credentials/{credential_id}/versions/{version}/restore", "post"),
    ],
)
def test_retryable_operations_take_an_idempotency_key(document: dict[str, Any], path: str, method: str) -> None:
    parameter = header_parameter(operation(document, path, method), "Idempotency-Key")
    assert parameter["required"] is False
    assert (parameter["schema"]["minLength"], parameter["schema"]["maxLength"]) == (1, 255)


def test_create_links_to_the_operations_on_the_new_credential(document: dict[str, Any]) -> None:
    links = operation(document, CREATE_PATH, "post")["responses"]["200"]["links"]
    operation_ids = {
        op["operationId"] for item in document["paths"].values() for op in item.values() if isinstance(op, dict)
    }
    assert sorted(links) == [
        "DeleteCredential", "GetCredential", "ListCredentialVersions", "RevealCredential", "UpdateCredential"
    ]  # fmt: skip
    for link in links.values():
        assert link["operationId"] in operation_ids
        assert link["parameters"] == {"credential_id": "$response.body#/id"}


def test_the_validation_error_schemas_match_the_seed(document: dict[str, Any], seed: dict[str, Any]) -> None:
    for name in ("HTTPValidationError", "ValidationError"):
        ours, theirs = component(document, name), seed["components"]["schemas"][name]
        assert normalised_properties(ours) == normalised_properties(theirs), name
        assert set(ours.get("required", [])) == set(theirs.get("required", [])), name


def test_create_takes_an_optional_workspace_header(document: dict[str, Any], seed: dict[str, Any]) -> None:
    ours = header_parameter(operation(document, CREATE_PATH, "post"), "X-Workspace-Id")
    theirs = header_parameter(seed["paths"][CREATE_PATH]["post"], "X-Workspace-Id")

    assert ours["name"] == theirs["name"] == "X-Workspace-Id"
    assert ours.get("required", False) is theirs["required"] is False
    shape = normalise(ours["schema"])
    assert (shape["type"], shape["nullable"]) == (normalise(theirs["schema"])["type"], True) == ("string", True)


def test_create_is_secured_by_the_dual_auth_scheme(document: dict[str, Any], seed: dict[str, Any]) -> None:
    # The seed's scheme first; X-API-Key, which the service accepts too, as the alternative.
    assert operation(document, CREATE_PATH, "post")["security"][:1] == seed["paths"][CREATE_PATH]["post"]["security"]
    assert operation(document, CREATE_PATH, "post")["security"] == SECURITY
    scheme = document["components"]["securitySchemes"]["DualAuthScheme"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert scheme == {**seed["components"]["securitySchemes"]["DualAuthScheme"], **scheme}


# --- every endpoint ----------------------------------------------------------------------------------------------


def test_the_document_lists_exactly_the_services_endpoints(document: dict[str, Any]) -> None:
    listed = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options"}
    }

    assert listed == (
        set(CREDENTIAL_OPERATIONS)
        | set(ADDED_OPERATIONS)
        | {AUTH_TYPES_OPERATION}
        | set(HEALTH_OPERATIONS)
        | WEBHOOK_OPERATIONS
        | set(ACCESS_OPERATIONS)
        | PROXY_OPERATIONS
    )


@pytest.mark.parametrize(("path", "method"), list(ACCESS_OPERATIONS), ids=list(ACCESS_OPERATIONS.values()))
def test_every_access_operation_is_secured_and_declares_its_errors(
    document: dict[str, Any], path: str, method: str
) -> None:
    op = operation(document, path, method)

    assert op["operationId"] == ACCESS_OPERATIONS[path, method]
    assert op["security"] == SECURITY
    assert header_parameter(op, "X-Workspace-Id").get("required", False) is False
    assert {"200", "400", "401", "403", "422"} <= set(op["responses"])
    assert op["responses"]["400"]["description"] == "A user of several workspaces sent no X-Workspace-Id"


ALL_ITEM_OPERATIONS = {**CREDENTIAL_OPERATIONS, **ADDED_OPERATIONS}


@pytest.mark.parametrize(("path", "method"), list(ALL_ITEM_OPERATIONS), ids=list(ALL_ITEM_OPERATIONS.values()))
def test_every_credentials_operation_is_declared_like_create(document: dict[str, Any], path: str, method: str) -> None:
    op = operation(document, path, method)

    assert op["operationId"] == ALL_ITEM_OPERATIONS[path, method]
    assert op["tags"] == ["Credentials"]
    assert op["security"] == SECURITY
    assert header_parameter(op, "X-Workspace-Id").get("required", False) is False
    assert "200" in op["responses"]
    assert "404" in op["responses"], f"no 404; declared: {sorted(op['responses'])}"
    assert "422" in op["responses"], f"no 422; declared: {sorted(op['responses'])}"
    # The guard's 400 (a user of several workspaces without X-Workspace-Id), not Litestar's validation 400.
    assert op["responses"]["400"]["description"] == "A user of several workspaces sent no X-Workspace-Id"


@pytest.mark.parametrize(("path", "method"), HEALTH_OPERATIONS)
def test_the_health_endpoints_are_listed(document: dict[str, Any], path: str, method: str) -> None:
    op = operation(document, path, method)

    assert ref_of(op["responses"]["200"]) == "#/components/schemas/Health"


def test_the_list_operation_declares_its_query_parameters(document: dict[str, Any]) -> None:
    op = operation(document, CREATE_PATH, "get")
    query = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}

    assert set(query) == {"skip", "limit", "credential_type", "auth_type", "status", "search", "cursor"}
    assert all(p.get("required", False) is False for p in query.values())
    shapes = {name: normalise(p["schema"]) for name, p in query.items()}
    assert shapes["skip"] == {"type": "integer", "minimum": 0, "default": 0, "nullable": False}
    assert shapes["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100, "nullable": False}
    assert shapes["credential_type"] == {"$ref": "CredentialType", "nullable": True}
    assert shapes["auth_type"] == {"$ref": "AuthType", "nullable": True}
    for name in ("status", "search"):
        assert (shapes[name]["type"], shapes[name]["nullable"]) == ("string", True)
    assert ref_of(op["responses"]["200"]).rsplit("/", 1)[-1] in {"CredentialList", "CredentialListResponse"}
    listing = component(document, ref_of(op["responses"]["200"]).rsplit("/", 1)[-1])
    assert set(listing["required"]) == {"credentials", "total", "page", "size"}
    assert set(listing["properties"]) == {"credentials", "total", "page", "size", "next_cursor"}  # addition


def test_the_update_body_is_all_optional_with_the_seeds_limits(document: dict[str, Any]) -> None:
    op = operation(document, ITEM_PATH, "put")
    assert ref_of(op["requestBody"]) == "#/components/schemas/CredentialUpdate"
    update = component(document, "CredentialUpdate")

    assert update.get("required", []) == []
    assert normalised_properties(update) == {
        "label": {"type": "string", "minLength": 1, "maxLength": 100, "nullable": True},
        "description": {"type": "string", "maxLength": 255, "nullable": True},
        "credential_scope": {"type": "string", "maxLength": 255, "nullable": True},
        "credentials": {"type": "object", "additionalProperties": True, "nullable": True},
        "expires_at": {"type": "string", "format": "date-time", "nullable": True},
        "proxy": {"$ref": "ProxyConfig", "nullable": True},
    }
    assert ref_of(op["responses"]["200"]) == "#/components/schemas/CredentialRead"


def test_get_answers_the_read_schema_or_its_masked_variant(document: dict[str, Any]) -> None:
    op = operation(document, ITEM_PATH, "get")
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]

    refs = {branch["$ref"] for branch in schema.get("oneOf", schema.get("anyOf", [schema]))}
    assert refs == {"#/components/schemas/CredentialRead", "#/components/schemas/CredentialMasked"}


# --- examples ----------------------------------------------------------------------------------------------------

REALISTIC_SECRET = re.compile(
    r"(?:^|[^A-Za-z0-9])(?:"
    r"[sprk]k_(?:live|test)_"  # Stripe-style and Mielto's sk_test_ / sk_live_
    r"|sk-[A-Za-z0-9]{16,}"  # OpenAI-style
    r"|ck_[a-z0-9]{16}_"  # this service's own API keys
    r"|mk_prod_"
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|xox[abprs]-"  # Slack tokens
    r"|eyJ[A-Za-z0-9_-]{10,}\."  # a JWT
    r"|-----BEGIN [A-Z ]*PRIVATE KEY"
    r"|Bearer [A-Za-z0-9._-]{16,}"
    r")"
)


def example_strings(node: Any, inside: bool = False) -> Iterator[str]:
    """Every string (keys too) inside an ``example`` or ``examples`` anywhere in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if inside:
                yield str(key)
            yield from example_strings(value, inside or key in {"example", "examples"})
    elif isinstance(node, list):
        for item in node:
            yield from example_strings(item, inside)
    elif inside and isinstance(node, str):
        yield node


def test_the_secret_pattern_catches_realistic_secrets() -> None:
    for value in ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_test_abc", "ck_0123456789abcdef_x", "AKIAABCDEFGHIJKLMNOP"]:
        assert REALISTIC_SECRET.search(value), value
    for value in ["<your key>", "Stripe production", "workspace", "api_key"]:
        assert not REALISTIC_SECRET.search(value), value


def test_no_example_holds_a_realistic_secret(document: dict[str, Any]) -> None:
    strings = list(example_strings(document))

    assert strings, "the walker found no example at all"
    assert [value for value in strings if REALISTIC_SECRET.search(value)] == []
    text = json.dumps(document)
    assert "sk_live" not in text
    assert "sk_test" not in text


# --- what the document adds to the handlers (service/openapi_extras.py) -------------------------------------------


def test_both_security_schemes_are_described(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"]["type"] == "apiKey"
    assert (schemes["ApiKeyHeader"]["name"], schemes["ApiKeyHeader"]["in"]) == ("X-API-Key", "header")
    assert schemes["ApiKeyHeader"]["description"]
    assert "Authorization: Bearer" in schemes["DualAuthScheme"]["description"]


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in {"get", "put", "post", "delete"}
    ]


def test_every_response_documents_x_request_id_and_every_503_retry_after(document: dict[str, Any]) -> None:
    for path, method, op in _operations(document):
        for status, response in op["responses"].items():
            assert "X-Request-Id" in response.get("headers", {}), (path, method, status)
        if "503" in op["responses"]:
            assert "Retry-After" in op["responses"]["503"]["headers"], (path, method)


def test_operations_with_a_body_document_413(document: dict[str, Any]) -> None:
    with_body = [(path, method) for path, method, op in _operations(document) if "requestBody" in op]
    assert (CREATE_PATH, "post") in with_body
    for path, method in with_body:
        response = operation(document, path, method)["responses"]["413"]
        assert response["description"] == "The request body is larger than CREDENTIALS_MAX_BODY_BYTES", path


def test_credential_responses_document_their_etag(document: dict[str, Any]) -> None:
    for path, method in [(CREATE_PATH, "post"), (ITEM_PATH, "get"), (ITEM_PATH, "put")]:
        assert "ETag" in operation(document, path, method)["responses"]["200"]["headers"], (path, method)
    assert "ETag" not in operation(document, CREATE_PATH, "get")["responses"]["200"]["headers"]


def test_readiness_documents_its_failure(document: dict[str, Any]) -> None:
    failed = operation(document, "/health/ready", "get")["responses"]["503"]
    assert failed["description"].startswith("Not ready")
    assert ref_of(failed) == "#/components/schemas/Health"


def test_api_key_and_session_bodies_have_examples(document: dict[str, Any]) -> None:
    create_key = operation(document, "/api/v1/api-keys", "post")["requestBody"]["content"]["application/json"]
    assert create_key["examples"]["ci"]["value"]["permissions"] == ["read", "write"]
    session = operation(document, "/api/v1/auth/session", "get")["responses"]["200"]["content"]["application/json"]
    assert session["examples"]["member"]["value"]["workspace_user"]["role"] == "member"


def test_only_the_seeds_operations_keep_fastapi_ids(document: dict[str, Any]) -> None:
    ids = {(path, method): op["operationId"] for path, method, op in _operations(document)}
    for key, fastapi_id in {**CREDENTIAL_OPERATIONS, **ACCESS_OPERATIONS}.items():
        assert ids[key] == fastapi_id
    others = {
        key: value for key, value in ids.items() if key not in CREDENTIAL_OPERATIONS and key not in ACCESS_OPERATIONS
    }
    assert all(re.fullmatch(r"[a-z_]+", value) and "api_v1" not in value for value in others.values()), others
    assert len(set(ids.values())) == len(ids)


def test_a_masked_view_matches_the_get_operations_answer(document: dict[str, Any]) -> None:
    # A masked view is a read view plus masked_credentials, so it matches both members: oneOf would refuse it
    # (schemathesis found it).
    schema = document["paths"]["/api/v1/credentials/{credential_id}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    assert "oneOf" not in schema
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in schema["anyOf"]} == {"CredentialRead", "CredentialMasked"}
