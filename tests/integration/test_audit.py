"""Vault's audit log alone tells a security team who touched which secret, in which workspace, for which API request,
and never shows a secret. The service runs as in production: AppRole login, not dev mode."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import httpx
import hvac
import pytest

from devtools.stack import BaoServer
from service.auth.api_keys import create as create_api_key
from tests.support.api import API, Caller, new_credential

SECRET_FIELDS = ("plaintext", "context", "ciphertext")


@pytest.fixture
async def caller(approle_client: httpx.AsyncClient) -> Caller:
    workspace = f"wsp_{secrets.token_hex(4)}"
    new = await create_api_key(workspace, ["read", "write", "reveal"])
    return Caller(workspace, new.key, new.id)


def audit_entries(bao: BaoServer, request_id: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in bao.audit_log.read_text().splitlines()]
    return [e for e in entries if e["request"].get("headers", {}).get("x-request-id") == [request_id]]


def assert_no_secret_in_audit_log(bao: BaoServer, *values: str) -> None:
    log = bao.audit_log.read_text()
    for value in values:
        for form in (value, base64.b64encode(value.encode()).decode()):
            assert form not in log


def assert_traced(
    entries: list[dict[str, Any]], caller: Caller, expected: set[tuple[str, str]], credential_id: str
) -> None:
    """Each expected (operation, path) has a request and a response entry; every entry names actor and workspace."""
    kv = f"workspaces/{caller.workspace}/credentials/{credential_id}"
    wanted = {(op, path.format(kv=kv)) for op, path in expected}
    for kind in ("request", "response"):
        seen = {(e["request"]["operation"], e["request"]["path"]) for e in entries if e["type"] == kind}
        assert seen == wanted, kind
    for entry in entries:
        assert entry["request"]["headers"]["x-credentials-actor"] == [caller.key_id]
        assert entry["request"]["headers"]["x-credentials-workspace"] == [caller.workspace]
        # The service's own AppRole token, with nothing but the service policy.
        assert entry["auth"]["policies"] == ["credentials-service"]
        assert entry["auth"]["display_name"] == "approle"
        for field in SECRET_FIELDS:
            for data in (entry["request"].get("data") or {}, (entry.get("response") or {}).get("data") or {}):
                if field in data:
                    assert data[field].startswith("hmac-sha256:"), field


async def create_traced(client: httpx.AsyncClient, caller: Caller, value: str, request_id: str) -> str:
    """Create a credential holding ``value`` under ``request_id``; its id."""
    response = await client.post(
        API,
        json=new_credential(credentials={"api_key": value}),
        headers={**caller.headers, "X-Request-Id": request_id},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    return str(response.json()["id"])


async def test_create_is_traced_in_the_audit_log_without_the_secret(
    approle_client: httpx.AsyncClient, caller: Caller, bao: BaoServer
) -> None:
    value = f"sk_live_{secrets.token_hex(16)}"
    request_id = f"req-create-{secrets.token_hex(4)}"

    credential_id = await create_traced(approle_client, caller, value, request_id)

    assert_traced(
        audit_entries(bao, request_id),
        caller,
        {
            ("update", "transit/encrypt/credentials"),
            # The create-only data write comes first, then the ownership metadata (see SecretStore.create).
            ("create", "credentials/data/{kv}"),
            ("update", "credentials/metadata/{kv}"),
        },
        credential_id,
    )
    assert_no_secret_in_audit_log(bao, value, json.dumps({"api_key": value}, separators=(",", ":")))


async def call(
    client: httpx.AsyncClient, caller: Caller, method: str, path: str, body: object = None
) -> tuple[httpx.Response, str]:
    """One API call under a request id of its own; the response and that id."""
    request_id = f"req-{method.lower()}-{secrets.token_hex(4)}"
    response = await client.request(method, path, json=body, headers={**caller.headers, "X-Request-Id": request_id})
    assert response.status_code == 200, response.text
    return response, request_id


async def test_update_is_traced_in_the_audit_log_without_the_secret(
    approle_client: httpx.AsyncClient, caller: Caller, bao: BaoServer
) -> None:
    old, new = f"sk_old_{secrets.token_hex(16)}", f"sk_new_{secrets.token_hex(16)}"
    credential_id = await create_traced(approle_client, caller, old, f"req-{secrets.token_hex(4)}")

    _, request_id = await call(
        approle_client, caller, "PUT", f"{API}/{credential_id}", {"credentials": {"api_key": new}}
    )

    assert_traced(
        audit_entries(bao, request_id),
        caller,
        {("update", "transit/encrypt/credentials"), ("update", "credentials/data/{kv}")},
        credential_id,
    )
    assert_no_secret_in_audit_log(bao, old, new, json.dumps({"api_key": new}, separators=(",", ":")))


@pytest.fixture
async def stored(approle_client: httpx.AsyncClient, caller: Caller) -> tuple[str, str]:
    """A credential's id and the API key it holds."""
    value = f"sk_live_{secrets.token_hex(16)}"
    return await create_traced(approle_client, caller, value, f"req-{secrets.token_hex(4)}"), value


async def test_reveal_is_traced_in_the_audit_log_without_the_secret(
    approle_client: httpx.AsyncClient, caller: Caller, bao: BaoServer, stored: tuple[str, str]
) -> None:
    credential_id, value = stored
    response, request_id = await call(approle_client, caller, "POST", f"{API}/{credential_id}/reveal")

    assert response.json()["credentials"] == {"api_key": value}
    entries = audit_entries(bao, request_id)
    assert_traced(
        entries,
        caller,
        {("read", "credentials/data/{kv}"), ("update", "transit/decrypt/credentials")},
        credential_id,
    )
    decrypted = next(e for e in entries if e["type"] == "response" and e["request"]["path"].startswith("transit/"))
    assert decrypted["response"]["data"]["plaintext"].startswith("hmac-sha256:")
    assert_no_secret_in_audit_log(bao, value, json.dumps({"api_key": value}, separators=(",", ":")))


async def test_delete_is_traced_in_the_audit_log(
    approle_client: httpx.AsyncClient, caller: Caller, bao: BaoServer, stored: tuple[str, str]
) -> None:
    credential_id, value = stored
    _, request_id = await call(approle_client, caller, "DELETE", f"{API}/{credential_id}")

    assert_traced(audit_entries(bao, request_id), caller, {("delete", "credentials/metadata/{kv}")}, credential_id)
    assert_no_secret_in_audit_log(bao, value)


async def test_audit_hash_tells_whether_a_known_secret_was_revealed(
    approle_client: httpx.AsyncClient, caller: Caller, bao: BaoServer
) -> None:
    """The security guide's recipe: HMAC the known plaintext (as transit saw it) and look for it in the log."""
    value = f"sk_live_{secrets.token_hex(16)}"
    credential_id = await create_traced(approle_client, caller, value, f"req-{secrets.token_hex(4)}")
    plaintext = base64.b64encode(json.dumps({"api_key": value}, separators=(",", ":")).encode()).decode()
    async with httpx.AsyncClient(base_url=f"{bao.addr}/v1", headers={"X-Vault-Token": bao.token}) as admin:
        hashed = (await admin.post("/sys/audit-hash/file", json={"input": plaintext})).json()["data"]["hash"]

    def decrypts_of_it() -> list[str]:
        entries = [json.loads(line) for line in bao.audit_log.read_text().splitlines()]
        return [
            e["request"]["headers"]["x-request-id"][0]
            for e in entries
            if e["type"] == "response" and (e.get("response") or {}).get("data", {}).get("plaintext") == hashed
        ]

    assert decrypts_of_it() == []
    await approle_client.post(f"{API}/{credential_id}/reveal", headers={**caller.headers, "X-Request-Id": "req-who"})
    assert decrypts_of_it() == ["req-who"]


def entries_during(bao: BaoServer, offset: int) -> list[dict[str, Any]]:
    """Every audit entry written after ``offset`` (a byte position in the audit log)."""
    with bao.audit_log.open("rb") as log:
        log.seek(offset)
        return [json.loads(line) for line in log.read().splitlines()]


async def test_every_vault_call_of_a_request_carries_its_id_and_actor(
    approle_client: httpx.AsyncClient, caller: Caller, bao: BaoServer
) -> None:
    """Reveal, the versions list, revoke, and an update that finds KV ahead of Postgres: each makes several Vault
    calls (metadata reads, destroys, retried writes); every entry each one leaves carries its request id and actor."""
    credential_id = await create_traced(
        approle_client, caller, f"sk_{secrets.token_hex(8)}", f"req-{secrets.token_hex(4)}"
    )
    # KV ahead of Postgres, as an update that wrote Vault but crashed before its commit leaves it.
    hvac.Client(url=bao.addr, token=bao.token).secrets.kv.v2.create_or_update_secret(
        path=f"workspaces/{caller.workspace}/credentials/{credential_id}",
        secret={"ciphertext": "vault:v1:never-served"},
        cas=1,
        mount_point="credentials",
    )
    calls = [
        ("reveal", "POST", f"{API}/{credential_id}/reveal", None),
        ("versions", "GET", f"{API}/{credential_id}/versions", None),
        ("conflicting-update", "PUT", f"{API}/{credential_id}", {"credentials": {"api_key": "sk_new"}}),
        ("revoke", "POST", f"{API}/{credential_id}/revoke", {"reason": "test"}),
    ]
    seen: dict[str, list[str]] = {}
    for name, method, path, body in calls:
        offset = bao.audit_log.stat().st_size
        _, request_id = await call(approle_client, caller, method, path, body)
        entries = entries_during(bao, offset)
        seen[name] = sorted({f"{e['request']['operation']} {e['request']['path']}" for e in entries})
        for entry in entries:
            headers = entry["request"].get("headers", {})
            assert headers.get("x-request-id") == [request_id], (name, entry["request"]["path"])
            assert headers.get("x-credentials-actor") == [caller.key_id], (name, entry["request"]["path"])
            assert headers.get("x-credentials-workspace") == [caller.workspace], (name, entry["request"]["path"])

    kv = f"workspaces/{caller.workspace}/credentials/{credential_id}"
    assert seen == {
        "reveal": [f"read credentials/data/{kv}", "update transit/decrypt/credentials"],
        "versions": [f"read credentials/metadata/{kv}"],
        # The CAS write fails (KV at v2), the metadata shows why, the unserved v2 is destroyed, the write is retried.
        "conflicting-update": [
            f"read credentials/metadata/{kv}",
            f"update credentials/data/{kv}",
            f"update credentials/destroy/{kv}",
            "update transit/encrypt/credentials",
        ],
        "revoke": [f"read credentials/metadata/{kv}", f"update credentials/destroy/{kv}"],
    }
