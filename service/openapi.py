"""What the OpenAPI document says beyond the handlers themselves: FastAPI's conventions (operation ids, the 200's
description, validation errors as 422 only), the workspace header every ``/api/v1`` operation takes, the error
responses they share, and the security scheme."""

from __future__ import annotations

import re
from typing import Any

from litestar import Litestar
from litestar.enums import ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, Example, OpenAPIType, Parameter, Schema, SecurityScheme
from litestar.params import HeaderParameter
from litestar.types import Method
from litestar.types.internal_types import PathParameterDefinition

from service import openapi_extras
from service.auth.principal import Permission
from service.errors import Detail, HTTPValidationError

SECURITY: list[dict[str, list[str]]] = [{"DualAuthScheme": []}]
COMPONENTS = Components(security_schemes={"DualAuthScheme": SecurityScheme(type="http", scheme="bearer")})

WORKSPACE_HEADER = {
    "x_workspace_id": HeaderParameter(
        annotation=str | None,
        name="X-Workspace-Id",
        description="The workspace ID",
        required=False,
        max_length=255,
        default=None,
    )
}
"""Mielto's ``X-Workspace-Id`` on every ``/api/v1`` operation; the authentication guard reads it.

Documented only (``document_workspace_header``), not a handler parameter: as a parameter Litestar resolved it on
every request, for nothing (measured: 11% of a GET's CPU), since the guard reads the header itself."""


def document_workspace_header(app: Litestar) -> None:
    """Put ``X-Workspace-Id`` after the path parameters of every ``/api/v1`` operation, where Litestar put it."""
    header = WORKSPACE_HEADER["x_workspace_id"]
    parameter = Parameter(
        name="X-Workspace-Id",
        param_in=ParamType.HEADER,
        schema=Schema(
            one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)],
            max_length=header.max_length,
            description=header.description,
        ),
        description=header.description,
        required=False,
        deprecated=False,
    )
    for path, path_item in (app.openapi_schema.paths or {}).items():
        if not path.startswith("/api/v1"):
            continue
        for operation in (path_item.get, path_item.post, path_item.put, path_item.delete, path_item.patch):
            if operation is not None:
                params = list(operation.parameters or [])
                after = sum(1 for p in params if isinstance(p, Parameter) and p.param_in == ParamType.PATH)
                operation.parameters = [*params[:after], parameter, *params[after:]]


def needs(permission: Permission) -> dict[str, Any]:
    """A handler's ``opt``: the permission the authentication guard checks before the body is read."""
    return {"permission": permission.value}


def operation_id(handler: HTTPRouteHandler, method: Method, path: list[str | PathParameterDefinition]) -> str:
    """FastAPI's operation id (``<function>_<path>_<method>``), as Mielto's clients were generated from."""
    template = "/" + "/".join(
        f"{{{part.name}}}" if isinstance(part, PathParameterDefinition) else part for part in path
    )
    return re.sub(r"\W", "_", f"{handler.handler_name}{template}") + f"_{method.lower()}"


def errors(*statuses: int, **described: str) -> dict[int, ResponseSpec]:
    """The error responses an operation declares: ``statuses`` with their usual descriptions, ``described`` (as
    ``e404="API key not found"``) with its own."""
    specs = {status: _COMMON[status] for status in statuses}
    for key, description in described.items():
        status = int(key.removeprefix("e"))
        specs[status] = ResponseSpec(
            data_container=Detail, description=description, examples=[Example(value={"detail": description})]
        )
    return specs


_COMMON: dict[int, ResponseSpec] = {
    400: ResponseSpec(data_container=Detail, description="A user of several workspaces sent no X-Workspace-Id"),
    401: ResponseSpec(data_container=Detail, description="Missing, invalid, expired or revoked API key or user token"),
    403: ResponseSpec(
        data_container=Detail,
        description="The caller lacks the permission, or X-Workspace-Id names a workspace it does not belong to",
    ),
    404: ResponseSpec(
        data_container=Detail,
        description="Credential not found",
        examples=[Example(value={"detail": "Credential not found"})],
    ),
    409: ResponseSpec(data_container=Detail, description="The credential's status forbids it"),
    410: ResponseSpec(data_container=Detail, description="That version was destroyed"),
    412: ResponseSpec(data_container=Detail, description="If-Match does not match the current ETag"),
    422: ResponseSpec(data_container=HTTPValidationError, description="Validation Error"),
    502: ResponseSpec(
        data_container=Detail,
        description="The OAuth token endpoint failed, timed out or is refused by the egress rules; nothing changed",
        examples=[
            Example(value={"detail": "Token refresh failed after 3 attempt(s): the token endpoint answered HTTP 503"})
        ],
    ),
    503: ResponseSpec(data_container=Detail, description="Vault or Postgres is unavailable; see Retry-After"),
}

LITESTAR_400 = "Bad request syntax or unsupported method"
"""The description of the 400 Litestar documents for validation errors (which this service answers with 422)."""


def follow_fastapi(app: Litestar) -> None:
    """Make the document read as FastAPI's: every success is a "Successful Response", and the 400 Litestar documents
    for validation errors (``LITESTAR_400``) goes, since this service answers them with the 422 each operation
    declares. A 400 a handler declares itself (a user of several workspaces without X-Workspace-Id) stays."""
    for path_item in (app.openapi_schema.paths or {}).values():
        for operation in (path_item.get, path_item.post, path_item.put, path_item.delete):
            if operation is None or not operation.responses:
                continue
            success = operation.responses.get("200")
            if success is not None:
                success.description = "Successful Response"
            declared = operation.responses.get("400")
            if declared is not None and getattr(declared, "description", None) == LITESTAR_400:
                operation.responses.pop("400")
    openapi_extras.complete(app.openapi_schema)
