"""What the OpenAPI document adds to the handlers' own declarations: the X-API-Key scheme beside DualAuthScheme,
the 400 and 413 the guard and the body limit answer, the headers every response carries (X-Request-Id; ETag on a
credential; Retry-After on 503), the readiness failure, examples for the API-key and session bodies, and clean
operation ids for the operations Mielto's API does not have (its own keep FastAPI's names, which clients were
generated from)."""

from __future__ import annotations

import copy
import re
from typing import Any

from litestar.openapi.spec import (
    Example,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)

API_KEY_SCHEME = "ApiKeyHeader"
SCHEMES = {
    "DualAuthScheme": SecurityScheme(
        type="http",
        scheme="bearer",
        description="`Authorization: Bearer <key>`: a workspace API key (`ck_<lookup>_<secret>`) or a user token "
        "(a JWT: HS256 with the service's secret, or RS256/ES256 with its public keys).",
    ),
    API_KEY_SCHEME: SecurityScheme(
        type="apiKey",
        name="X-API-Key",
        security_scheme_in="header",
        description="`X-API-Key: <key>`: a workspace API key, instead of `Authorization: Bearer`.",
    ),
}

# Operations of Mielto's API (tests/seed and its published document): their FastAPI-style ids stay.
MIELTO_OPERATIONS = frozenset(
    {
        ("/api/v1/credentials", "post"),
        ("/api/v1/credentials", "get"),
        ("/api/v1/credentials/{credential_id}", "get"),
        ("/api/v1/credentials/{credential_id}", "put"),
        ("/api/v1/credentials/{credential_id}", "delete"),
        ("/api/v1/credentials/{credential_id}/reveal", "post"),
        ("/api/v1/api-keys", "post"),
        ("/api/v1/api-keys", "get"),
        ("/api/v1/api-keys/{key_id}", "delete"),
        ("/api/v1/auth/session", "get"),
    }
)

# Operations answering one credential's metadata: their 200 carries its ETag.
WITH_ETAG = frozenset(
    {
        ("/api/v1/credentials", "post"),
        ("/api/v1/credentials/{credential_id}", "get"),
        ("/api/v1/credentials/{credential_id}", "put"),
        ("/api/v1/credentials/{credential_id}/restore", "post"),
        ("/api/v1/credentials/{credential_id}/refresh", "post"),
        ("/api/v1/credentials/{credential_id}/disable", "post"),
        ("/api/v1/credentials/{credential_id}/enable", "post"),
        ("/api/v1/credentials/{credential_id}/revoke", "post"),
        ("/api/v1/credentials/{credential_id}/versions/{version}/restore", "post"),
    }
)

_STRING = Schema(type=OpenAPIType.STRING)
REQUEST_ID = OpenAPIHeader(
    schema=_STRING,
    description="The request's id: the client's X-Request-Id when it sent a sane one, else a new one. Vault's audit "
    "log records it with every secret access the request made.",
)
ETAG = OpenAPIHeader(schema=_STRING, description="The credential's version tag; send it back in If-Match on PUT.")
RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER), description="Seconds to wait before retrying (CREDENTIALS_RETRY_AFTER)."
)

BAD_REQUEST = "A user of several workspaces sent no X-Workspace-Id"
TOO_LARGE = "The request body is larger than CREDENTIALS_MAX_BODY_BYTES"

API_KEY_EXAMPLE = {"label": "ci", "permissions": ["read", "write"], "expires_at": "2027-01-31T00:00:00Z"}
SESSION_EXAMPLE = {
    "user": {"id": "usr_ada", "email": None, "name": None},
    "workspace": {"id": "wsp_acme"},
    "workspace_user": {
        "role": "member",
        "is_owner": False,
        "permissions": ["read", "write", "reveal"],
        "status": "active",
    },
    "auth_type": "bearer_token",
    "auth_provider": "jwt",
    "api_key": None,
}


def _operations(document: OpenAPI) -> list[tuple[str, str, Operation]]:
    found = []
    for path, item in (document.paths or {}).items():
        for method in ("get", "post", "put", "delete"):
            operation = getattr(item, method)
            if operation is not None:
                found.append((path, method, operation))
    return found


def _detail_response(operation: Operation, description: str) -> OpenAPIResponse | None:
    """A ``{"detail": ...}`` response described as ``description``, shaped like the operation's 401."""
    unauthorized = (operation.responses or {}).get("401")
    if not isinstance(unauthorized, OpenAPIResponse):
        return None
    content = copy.deepcopy(unauthorized.content)
    for media in (content or {}).values():
        media.examples = {"detail": Example(value={"detail": description})}
    return OpenAPIResponse(description=description, content=content)


def _add_header(response: Any, name: str, header: OpenAPIHeader) -> None:
    if isinstance(response, OpenAPIResponse):
        response.headers = {**(response.headers or {}), name: header}


def complete(document: OpenAPI) -> None:
    """Add to ``document`` (in place) what the module docstring lists."""
    components = document.components
    components.security_schemes = {**(components.security_schemes or {}), **SCHEMES}
    for path, method, operation in _operations(document):
        responses = operation.responses = operation.responses or {}
        if (path, method) not in MIELTO_OPERATIONS:
            operation.operation_id = _clean_id(operation.operation_id or "", path, method)
        if path.startswith("/api/v1/"):
            operation.security = [{"DualAuthScheme": []}, {API_KEY_SCHEME: []}]
            if "400" not in responses and (extra := _detail_response(operation, BAD_REQUEST)) is not None:
                responses["400"] = extra
            if operation.request_body is not None and (extra := _detail_response(operation, TOO_LARGE)) is not None:
                responses["413"] = extra
        for response in responses.values():
            _add_header(response, "X-Request-Id", REQUEST_ID)
        if (path, method) == ("/api/v1/credentials/{credential_id}", "get"):
            # A masked view is a read view plus `masked_credentials`: it matches both schemas, so the union is anyOf
            # (oneOf would refuse every masked answer for matching two).
            for media in (getattr(responses.get("200"), "content", None) or {}).values():
                schema = media.schema
                if isinstance(schema, Schema) and schema.one_of:
                    schema.any_of, schema.one_of = schema.one_of, None
        if (path, method) in WITH_ETAG:
            _add_header(responses.get("200"), "ETag", ETAG)
        _add_header(responses.get("503"), "Retry-After", RETRY_AFTER)
        if (path, method) == ("/health/ready", "get"):
            _readiness_failure(responses)
        body = operation.request_body
        if (path, method) == ("/api/v1/api-keys", "post") and isinstance(body, RequestBody):
            for media in (body.content or {}).values():
                media.examples = {"ci": Example(summary="A CI key", value=API_KEY_EXAMPLE)}
        if (path, method) == ("/api/v1/auth/session", "get"):
            for media in (getattr(responses.get("200"), "content", None) or {}).values():
                media.examples = {
                    "member": Example(summary="A member, signed in with a user token", value=SESSION_EXAMPLE)
                }


def _readiness_failure(responses: dict[str, Any]) -> None:
    ready = responses.get("200")
    if not isinstance(ready, OpenAPIResponse):
        return
    content = copy.deepcopy(ready.content)
    for media in (content or {}).values():
        media.examples = {
            "vault": Example(value={"status": "unavailable", "checks": {"database": "ok", "vault": "unavailable"}})
        }
    responses["503"] = OpenAPIResponse(
        description="Not ready: a backend does not answer; `checks` names which",
        content=content,
        headers={"Retry-After": RETRY_AFTER, "X-Request-Id": REQUEST_ID},
    )


def _clean_id(current: str, path: str, method: str) -> str:
    """The handler's name: FastAPI's id without the path and method it appends. The proxy's one handler serves
    every method, so its operations are ``proxy_<method>``."""
    if path.startswith("/api/v1/proxy/"):
        return f"proxy_{method}"
    suffix = re.sub(r"\W", "_", path) + f"_{method}"  # as service.openapi.operation_id appends them
    return current.removesuffix(suffix) if current.endswith(suffix) else current
