"""The one mapping from errors to responses, without a server: Litestar's validation failures become FastAPI's 422,
the service's own errors keep ``{"detail": ...}``, and a failing backend never shows its message."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.exceptions import ValidationException

from service.errors import validation_to_422


def translated(*problems: dict[str, Any]) -> list[dict[str, Any]]:
    response = validation_to_422(None, ValidationException(extra=list(problems)))  # type: ignore[arg-type]
    assert response.status_code == 422
    body: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(response.content))
    return list(body["detail"])


# (msgspec's message, Litestar's key and source) -> (loc, msg, type) of FastAPI's 422
CASES = [
    ("Object missing required field `label`", "data", "body", ["body", "label"], "Field required", "missing"),
    ("Object contains unknown field `workspace_id`", "data", "body", ["body", "workspace_id"], "Extra inputs are not permitted", "extra_forbidden"),
    ("Expected `str` of length <= 100", "label", "body", ["body", "label"], "String should have at most 100 characters", "string_too_long"),
    ("Expected `int` >= 1", "limit", "query", ["query", "limit"], "Input should be greater than or equal to 1", "greater_than_equal"),
    ("Invalid enum value 'oauth2'", "auth_type", "body", ["body", "auth_type"], "Input should be one of the allowed values, not 'oauth2'", "enum"),
    ("Expected `str | null`, got `int`", "description", "body", ["body", "description"], "Input should be a valid string, not integer", "string_type"),
    ("Expected `str`, got `int`", "auth_type", "body", ["body", "auth_type"], "Input should be one of the allowed values", "enum"),
    ("Expected `str` of length <= 255", "x_workspace_id", "header", ["header", "X-Workspace-Id"], "String should have at most 255 characters", "string_too_long"),
    ("'data'", "data", "body", ["body"], "Field required", "missing"),
]  # fmt: skip


@pytest.mark.parametrize(("message", "key", "source", "loc", "msg", "type_"), CASES)
def test_msgspec_messages_become_the_422_fastapi_clients_know(
    message: str, key: str, source: str, loc: list[str], msg: str, type_: str
) -> None:
    assert translated({"message": message, "key": key, "source": source}) == [{"loc": loc, "msg": msg, "type": type_}]


def test_every_problem_is_reported_in_order() -> None:
    assert [e["loc"] for e in translated(
        {"message": "Expected `int` >= 0", "key": "skip", "source": "query"},
        {"message": "Expected `int` <= 1000", "key": "limit", "source": "query"},
    )] == [["query", "skip"], ["query", "limit"]]  # fmt: skip
