"""Telemetry against the real stack: the /metrics scrape after traffic, JSON log lines from a real ``credctl
serve`` (request id, actor and workspace on every line, access lines included), OpenTelemetry spans for the request,
its Vault calls and its Postgres statements, and no secret in any of them."""

from __future__ import annotations

import json
import re
import secrets

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtools.stack import BaoServer
from service.config import Settings
from service.telemetry import tracing
from tests.support.api import API, Caller, new_credential
from tests.support.metrics import sample
from tests.support.servers import credctl, env_for, running_app, serving, settings_for


async def create_and_reveal(client: httpx.AsyncClient, caller: Caller, secret: str) -> str:
    created = await client.post(API, json=new_credential(credentials={"api_key": secret}), headers=caller.headers)
    assert created.status_code == 200
    revealed = await client.post(f"{API}/{created.json()['id']}/reveal", headers=caller.headers)
    assert revealed.json()["credentials"] == {"api_key": secret}
    return str(created.json()["id"])


async def test_metrics_after_create_and_reveal_count_by_route_and_hold_no_secret(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    before = (await client.get("/metrics")).text
    secret = f"sk_metrics_{secrets.token_hex(12)}"
    credential_id = await create_and_reveal(client, caller, secret)
    bad = await client.get(API, headers={"Authorization": "Bearer ck_not_a_real_key"})
    await client.get("/no/such/route")
    scrape = await client.get("/metrics")

    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=")
    text = scrape.text
    create = {"route": "/api/v1/credentials", "method": "POST", "status": "200"}
    assert (
        sample(text, "credentials_http_requests_total", **create)
        == sample(before, "credentials_http_requests_total", **create) + 1
    )
    reveal = {"route": "/api/v1/credentials/{credential_id}/reveal", "method": "POST", "status": "200"}
    assert sample(text, "credentials_http_requests_total", **reveal) >= 1
    assert sample(text, "credentials_http_requests_total", route="unmatched", method="GET", status="404") >= 1
    assert (
        sample(text, "credentials_http_request_duration_seconds_count", route="/api/v1/credentials", method="POST") >= 1
    )
    assert bad.status_code == 401
    assert sample(text, "credentials_auth_failures_total", reason="invalid_api_key") >= 1
    for operation in ("transit/encrypt", "transit/decrypt", "credentials/data"):
        assert sample(text, "credentials_vault_call_duration_seconds_count", operation=operation) >= 1, operation
    assert sample(text, "credentials_db_query_duration_seconds_count", operation="INSERT credential") >= 1
    # The gauge is the process's: whichever app of the session scraped last set it (8 or 4 in these tests).
    assert sample(text, "credentials_db_pool_connections", state="max") in {4.0, 8.0}
    assert 0 < sample(text, "credentials_db_pool_connections", state="open") <= 8
    assert "credentials_vault_calls_queued" in text
    assert "credentials_oauth_refreshes_total" in text or "# HELP credentials_oauth_refreshes_total" in text
    assert secret not in text
    assert caller.key not in text
    assert credential_id not in text  # routes are templates, never ids


async def test_metrics_can_require_a_bearer_token(
    settings: Settings, bao: BaoServer, client: httpx.AsyncClient
) -> None:
    token = secrets.token_hex(16)
    guarded = settings_for(settings.database.url, bao, CREDENTIALS_METRICS_TOKEN=token, CREDENTIALS_DB_POOL_MAX="2")
    async with running_app(guarded) as app:
        anonymous = await app.get("/metrics")
        wrong = await app.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = await app.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert (anonymous.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert "credentials_http_requests_total" in right.text


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    tracing.install_provider(exporter)  # the process's one provider; later apps reuse it (install_provider_once)
    return exporter


async def test_traces_span_the_request_its_vault_calls_and_its_statements_without_secrets(
    settings: Settings, bao: BaoServer, client: httpx.AsyncClient, caller: Caller, spans: InMemorySpanExporter
) -> None:
    traced = settings_for(settings.database.url, bao, CREDENTIALS_OTEL_TRACES="true", CREDENTIALS_DB_POOL_MAX="2")
    secret = f"sk_traces_{secrets.token_hex(12)}"
    async with running_app(traced) as app:
        spans.clear()
        await create_and_reveal(app, caller, secret)
    finished = spans.get_finished_spans()
    by_name = {span.name for span in finished}

    assert "POST /api/v1/credentials" in by_name
    assert "POST /api/v1/credentials/{credential_id}/reveal" in by_name
    assert "vault POST transit/encrypt" in by_name
    assert "vault GET credentials/data" in by_name or "vault POST credentials/data" in by_name
    assert "postgres INSERT credential" in by_name
    server = next(s for s in finished if s.name == "POST /api/v1/credentials")
    children = [s for s in finished if s.parent is not None and s.parent.span_id == server.context.span_id]
    assert {s.name.split(" ")[0] for s in children} >= {"vault", "postgres"}
    dumped = json.dumps([{"name": s.name, "attributes": dict(s.attributes or {})} for s in finished])
    assert secret not in dumped
    assert caller.key not in dumped


@pytest.mark.e2e
def test_json_logs_carry_request_id_actor_and_workspace_on_every_line(settings: Settings) -> None:
    env = env_for(settings, CREDENTIALS_LOG_FORMAT="json", CREDENTIALS_DB_POOL_MAX="4", CREDENTIALS_VAULT_WORKERS="4")
    workspace = f"wsp_{secrets.token_hex(4)}"
    key = credctl("api-key", "create", "--workspace", workspace, env=env).stdout.strip()
    secret = f"sk_logs_{secrets.token_hex(12)}"
    with (
        serving(env) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}", "X-Request-Id": "req-logs-1"}
        ) as http,
    ):
        created = http.post("/api/v1/credentials", json=new_credential(credentials={"api_key": secret}))
        http.post(f"/api/v1/credentials/{created.json()['id']}/reveal")
        http.get("/api/v1/credentials/00000000-0000-0000-0000-000000000000")
        unrouted = http.get("/no/such/route")
    # A request no route serves has its id too, in its answer and its access line.
    assert (unrouted.status_code, unrouted.headers["x-request-id"]) == (404, "req-logs-1")
    lines = [line for line in server.output.splitlines() if line.strip()]
    not_json = [line for line in lines if not line.startswith("{")]
    assert not_json == []
    records = [json.loads(line) for line in lines]

    assert all({"time", "level", "logger", "message", "request_id", "actor", "workspace"} <= r.keys() for r in records)
    access = [r for r in records if r["logger"] == "service.access" and r["request_id"] == "req-logs-1"]
    assert [(r["method"], r["route"], r["status"]) for r in access] == [
        ("POST", "/api/v1/credentials", 200),
        ("POST", "/api/v1/credentials/{credential_id}/reveal", 200),
        ("GET", "/api/v1/credentials/{credential_id}", 404),
        ("GET", "unmatched", 404),
    ]
    authenticated, unrouted_line = access[:-1], access[-1]
    assert (unrouted_line["actor"], unrouted_line["workspace"]) == (None, None)  # never authenticated
    actors = {r["actor"] for r in authenticated}
    assert {r["workspace"] for r in authenticated} == {workspace}
    assert len(actors) == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", actors.pop())  # the API key's id
    assert secret not in server.output
    assert key not in server.output
