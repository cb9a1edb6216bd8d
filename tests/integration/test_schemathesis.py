"""The API against its own OpenAPI document: schemathesis generates requests from ``/schema/openapi.json`` of a
running ``credctl serve`` and checks that no answer is a 5xx and every answer matches what the document declares
(status, content type, body schema). A stateful run follows the document's links from a create to get, update,
reveal, versions and delete. Examples are bounded so the module stays within about a minute.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from db.tables import ApiKey, Credential
from service.auth.api_keys import create as create_api_key
from service.config import Settings
from tests.support.api import new_credential
from tests.support.servers import env_for, serving

pytestmark = pytest.mark.e2e

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 8


@dataclass(frozen=True)
class Target:
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def served_url(settings: Settings) -> Iterator[str]:
    """One ``credctl serve`` for the module (starting one costs seconds)."""
    with serving(env_for(settings)) as served:
        yield served.url


@pytest.fixture
async def target(client: httpx.AsyncClient, served_url: str) -> AsyncIterator[Target]:
    """A key of each test's own: the suite removes every API key after each test that uses the app."""
    workspace = f"wsp_schema_{secrets.token_hex(4)}"
    key = await create_api_key(workspace, ["read", "write", "reveal", "admin"])
    # The caller's own workspace: a generated X-Workspace-Id would only ever be refused (403).
    yield Target(served_url, {"Authorization": f"Bearer {key.key}", "X-Workspace-Id": workspace})
    await Credential.delete().where(Credential.workspace_id == workspace)
    await ApiKey.delete().where(ApiKey.workspace_id == workspace)


def without_generated_credentials(headers: dict[str, str] | None) -> dict[str, str]:
    """The generated headers without any credential: the document offers two schemes, and a generated X-API-Key
    beside the caller's Authorization would make every call a 401."""
    return {k: v for k, v in (headers or {}).items() if k.lower() not in {"authorization", "x-api-key"}}


def load(target: Target) -> Any:
    schema = schemathesis.openapi.from_url(f"{target.url}/schema/openapi.json")
    schema.config.update(base_url=target.url)
    return schema


def test_every_operation_answers_within_its_schema(target: Target) -> None:
    schema = load(target)
    failures: list[str] = []
    seen: collections.Counter[str] = collections.Counter()
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: Any) -> None:
            case.headers = without_generated_credentials(case.headers)
            response = case.call_and_validate(headers=target.headers, checks=CHECKS, timeout=30)
            seen[f"{case.method} {case.path} {response.status_code}"] += 1

        try:
            check()
        except Exception as exc:  # collect every operation's finding, then fail once
            failures.append(f"{operation.label}: {exc}")
    print(f"\n[schemathesis] {sum(seen.values())} calls: {dict(sorted(seen.items()))}")
    assert failures == [], "\n\n".join(failures)
    # It reached the handlers, not only the validation.
    assert seen["GET /api/v1/credentials 200"] > 0


def test_create_then_follow_the_links(target: Target) -> None:
    # The create and the operations its links lead to (and the list): with every operation in the walk, a run of
    # this size sometimes never chose the create at all, and then followed no link.
    schema = load(target).include(path_regex=r"^/api/v1/credentials(/\{credential_id\}(/reveal|/versions)?)?$")
    base = schema.as_state_machine()
    followed: collections.Counter[str] = collections.Counter()

    class Workflow(base):  # type: ignore[misc, valid-type]
        def before_call(self, case: Any) -> None:
            # The caller's key, over any Authorization schemathesis generates from the security scheme.
            case.headers = {**without_generated_credentials(case.headers), **target.headers}
            # A generated secret seldom fits its auth type: make most creates valid, so the links get followed.
            if case.method == "POST" and case.path == "/api/v1/credentials":
                case.body = new_credential(auth_type="custom", credentials={"value": "generated"})

        def after_call(self, response: Any, case: Any) -> None:
            followed[f"{case.method} {case.path} {response.status_code}"] += 1

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": target.headers, "timeout": 30}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    Workflow.run(
        settings=settings(
            max_examples=20,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )
    print(f"\n[schemathesis, stateful] {sum(followed.values())} calls: {dict(sorted(followed.items()))}")
    # Valid creates ran, so the links had an id to follow (which follow-up succeeds varies with the generated input).
    assert followed["POST /api/v1/credentials 200"] > 0
