"""The access matrix: every kind of caller x every endpoint x own and other workspace, exact status and body.

Each cell builds a fresh world: workspace A (the caller's) and workspace B (another one), a target object (a
credential or an API key) in A or B, and the caller. Targets:

- ``own``: the object is in A and ``X-Workspace-Id`` names A;
- ``other``: the object is in B and ``X-Workspace-Id`` names A (an id from another workspace: 404 as if missing);
- ``other-header``: ``X-Workspace-Id`` names B (a key of A: 403; a user who is not a member of B: 403).

Collection endpoints (list, create, session) have no object, so only ``own`` and ``other-header`` apply.
The expected answer is derived from the rules in order: authentication (401), workspace (403), permission (403),
the object's visibility (404), then the exact success body.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest

from db import grants as grant_rows
from db.tables import ApiKey
from service.access.controller import to_key_read
from service.auth.api_keys import create as create_api_key
from service.auth.api_keys import revoke as revoke_api_key
from service.auth.guard import GRANT_USE_ONLY
from service.grants.service import new_token
from tests.support.api import API, new_credential
from tests.support.tokens import mint, stranger_rsa_key

KEYS_API = "/api/v1/api-keys"
SESSION_API = "/api/v1/auth/session"
ALL = ("read", "write", "reveal", "admin", "use")
PROXY_API = "/api/v1/proxy"


@dataclass
class World:
    client: httpx.AsyncClient
    a: str
    b: str
    keys_in_a: list[dict[str, Any]] = field(default_factory=list)
    setup: dict[str, dict[str, str]] = field(default_factory=dict)
    target_credential: dict[str, Any] | None = None
    """The cell's credential, when its endpoint has one."""

    async def key(self, workspace: str, permissions: tuple[str, ...], **options: Any) -> tuple[str, dict[str, Any]]:
        new = await create_api_key(workspace, list(permissions), "matrix", **options)
        read = msgspec.to_builtins(to_key_read(new.row))
        if workspace == self.a:
            self.keys_in_a.append(read)
        return new.key, read

    async def credential(self, workspace: str) -> dict[str, Any]:
        body = new_credential(credentials={"api_key": "sk_matrix"})
        response = await self.client.post(API, json=body, headers=self.setup[workspace])
        assert response.status_code == 200, response.text
        created: dict[str, Any] = response.json()
        return created


async def build_world(client: httpx.AsyncClient) -> World:
    world = World(client, f"wsp_a_{secrets.token_hex(4)}", f"wsp_b_{secrets.token_hex(4)}")
    for workspace in (world.a, world.b):
        key, _ = await world.key(workspace, ALL)
        world.setup[workspace] = {"Authorization": f"Bearer {key}"}
    return world


@dataclass(frozen=True)
class Who:
    """A caller: the headers it sends and what the service should make of it."""

    headers: dict[str, str]
    error: tuple[int, str] | None = None
    kind: str = "api_key"
    actor: str = ""
    permissions: tuple[str, ...] = ()
    role: str | None = None
    workspaces: tuple[str, ...] = ()
    provider: str = "api_key"
    label: str | None = None
    presented: str = ""


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def api_key_caller(*permissions: str) -> Callable[[World], Awaitable[Who]]:
    async def make(world: World) -> Who:
        key, read = await world.key(world.a, permissions)
        return Who(bearer(key), actor=read["id"], permissions=permissions, label="matrix", presented=key)

    return make


def broken_key(how: str) -> Callable[[World], Awaitable[Who]]:
    async def make(world: World) -> Who:
        if how == "malformed":
            key = "ck_not_a_key"
        elif how == "inactive":
            key, _ = await world.key(world.a, ALL, status="inactive")
        else:
            key, read = await world.key(world.a, ALL)
            if how == "revoked":
                await revoke_api_key(read["id"])
                world.keys_in_a.remove(read)
            else:
                past = datetime.now(UTC) - timedelta(seconds=1)
                await ApiKey.update({ApiKey.expires_at: past}).where(ApiKey.id == read["id"])
                world.keys_in_a[-1] = {**read, "expires_at": msgspec.to_builtins(past)}
        return Who(bearer(key), error=(401, "Invalid API key"), presented=key)

    return make


ROLE_PERMISSIONS = {"owner": ALL, "admin": ALL, "member": ("read", "write", "reveal", "use"), "viewer": ("read",)}
# Each role signs with another algorithm, so every verification path is exercised by the whole matrix.
ROLE_SIGNING = {
    "owner": {"algorithm": "HS256"},
    "admin": {"algorithm": "RS256", "kid": "rsa-1"},
    "member": {"algorithm": "ES256", "kid": "ec-1"},
    "viewer": {"algorithm": "HS256"},
}


def user_caller(role: str) -> Callable[[World], Awaitable[Who]]:
    async def make(world: World) -> Who:
        sub = f"usr_{secrets.token_hex(6)}"
        token = mint(sub, [{"id": world.a, "role": role}], email=f"{sub}@example.test", **ROLE_SIGNING[role])
        supabase = role == "viewer"  # Mielto's own clients send "Bearer supabase_<jwt>"
        return Who(
            bearer(f"supabase_{token}" if supabase else token),
            kind="user",
            actor=sub,
            permissions=ROLE_PERMISSIONS[role],
            role=role,
            workspaces=(world.a,),
            provider="supabase" if supabase else "jwt",
            presented=token,
        )

    return make


def broken_token(how: str) -> Callable[[World], Awaitable[Who]]:
    async def make(world: World) -> Who:
        sub, owner_of_a = f"usr_{secrets.token_hex(6)}", {world.a: "owner"}
        if how == "expired":
            token, detail = mint(sub, owner_of_a, lifetime=-120), "Token has expired"
        elif how == "wrong-signature":
            token, detail = mint(sub, owner_of_a, algorithm="RS256", key=stranger_rsa_key(), kid="rsa-1"), None
        elif how == "wrong-audience":
            token, detail = mint(sub, owner_of_a, aud="another-app"), None
        elif how == "wrong-issuer":
            token, detail = mint(sub, owner_of_a, iss="https://elsewhere.invalid"), None
        elif how == "not-yet-valid":
            token, detail = mint(sub, owner_of_a, nbf=int(time.time()) + 600), None
        elif how == "alg-none":
            token = mint(sub, owner_of_a).rsplit(".", 1)[0].split(".", 1)[1]
            token, detail = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + token + ".", None
        else:
            token, detail = "supabase_not.a.jwt", None
        return Who(bearer(token), error=(401, detail or "Invalid token"), presented=token)

    return make


async def other_workspace_user(world: World) -> Who:
    """A valid owner token, but of a third workspace only."""
    sub = f"usr_{secrets.token_hex(6)}"
    token = mint(sub, {f"wsp_c_{secrets.token_hex(4)}": "owner"})
    return Who(bearer(token), kind="user", actor=sub, permissions=ALL, role="owner", presented=token)


async def grant_holder(world: World) -> Who:
    """A grant token for a credential of A: the cell's own credential when it has one in A, else a credential of its
    own (so on ``other`` cells it is a grant for another credential). Written as the grants API writes it, because
    the matrix's credentials have no proxy settings, which creating one through the API needs."""
    target = world.target_credential
    credential = target if target and target["workspace_id"] == world.a else await world.credential(world.a)
    lookup, secret_hash, token = new_token()
    now = datetime.now(UTC)
    await grant_rows.insert(
        {
            "id": uuid.uuid4(),
            "credential_id": uuid.UUID(credential["id"]),
            "workspace_id": world.a,
            "lookup_id": lookup,
            "secret_hash": secret_hash,
            "label": "matrix agent",
            "methods": None,
            "path_prefixes": None,
            "max_uses": None,
            "uses": 0,
            "expires_at": now + timedelta(minutes=5),
            "created_at": now,
            "created_by": "matrix",
            "revoked_at": None,
        }
    )
    return Who(bearer(token), kind="grant", actor=credential["id"], permissions=("use",), presented=token)


async def nobody(world: World) -> Who:
    return Who({}, error=(401, "Not authenticated"))


CALLERS: dict[str, Callable[[World], Awaitable[Who]]] = {
    "key-read": api_key_caller("read"),
    "key-write": api_key_caller("write"),
    "key-reveal": api_key_caller("reveal"),
    "key-admin": api_key_caller("admin"),
    "key-use": api_key_caller("use"),
    "key-read-write-reveal": api_key_caller("read", "write", "reveal"),
    "key-all": api_key_caller(*ALL),
    "user-owner": user_caller("owner"),
    "user-admin": user_caller("admin"),
    "user-member": user_caller("member"),
    "user-viewer": user_caller("viewer"),
    "user-of-another-workspace": other_workspace_user,
    "grant": grant_holder,
    "no-credentials": nobody,
    "key-expired": broken_key("expired"),
    "key-revoked": broken_key("revoked"),
    "key-inactive": broken_key("inactive"),
    "key-malformed": broken_key("malformed"),
    "token-expired": broken_token("expired"),
    "token-wrong-signature": broken_token("wrong-signature"),
    "token-wrong-audience": broken_token("wrong-audience"),
    "token-wrong-issuer": broken_token("wrong-issuer"),
    "token-not-yet-valid": broken_token("not-yet-valid"),
    "token-alg-none": broken_token("alg-none"),
    "token-malformed": broken_token("malformed"),
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    permission: str | None
    target: str | None  # "credential", "key", or None for collection endpoints
    body: dict[str, Any] | None = None


ENDPOINTS = {
    "create-credential": Endpoint("POST", API, "write", None, new_credential(credentials={"api_key": "sk_matrix"})),
    "list-credentials": Endpoint("GET", API, "read", None),
    "get-credential": Endpoint("GET", API + "/{id}", "read", "credential"),
    "update-credential": Endpoint("PUT", API + "/{id}", "write", "credential", {"label": "changed"}),
    "delete-credential": Endpoint("DELETE", API + "/{id}", "write", "credential"),
    "reveal-credential": Endpoint("POST", API + "/{id}/reveal", "reveal", "credential"),
    "create-api-key": Endpoint("POST", KEYS_API, "admin", None, {"label": "new", "permissions": ["read"]}),
    "list-api-keys": Endpoint("GET", KEYS_API, "admin", None),
    "revoke-api-key": Endpoint("DELETE", KEYS_API + "/{id}", "admin", "key"),
    "session": Endpoint("GET", SESSION_API, None, None),
    "proxy-call": Endpoint("GET", PROXY_API + "/{id}/v1/ping", "use", "credential"),
    "create-grant": Endpoint("POST", API + "/{id}/grants", "use", "credential", {"ttl_seconds": 60}),
    "list-grants": Endpoint("GET", API + "/{id}/grants", "read", "credential"),
    "list-usage": Endpoint("GET", API + "/{id}/usage", "read", "credential"),
    "check-credential": Endpoint("POST", API + "/{id}/check", "use", "credential"),
}
NOT_PROXYABLE = "The credential has no proxy settings; set 'proxy' (base_url, methods, path_prefixes) to use it"
"""The matrix's credentials have no proxy settings: whoever passes authentication and permission gets this 409."""
CELLS = [
    (caller, endpoint, target)
    for caller in CALLERS
    for endpoint, spec in ENDPOINTS.items()
    for target in (("own", "other", "other-header") if spec.target else ("own", "other-header"))
]


def forbidden_detail(who: Who, permission: str) -> str:
    if who.kind == "user":
        return f"The '{who.role}' role lacks the '{permission}' permission"
    return f"This API key lacks the '{permission}' permission"


GRANT_ROUTES = {"proxy-call", "reveal-credential"}
"""Where a grant token is recognised at all: its credential's proxy (use) and reveal (refused, 403)."""


def grant_expected(name: str, target: str) -> tuple[int, Any]:
    """A grant authenticates only its own credential's proxy route; on its reveal it is refused (403: use, never
    see); everywhere else, another credential's routes included, it is nothing (401)."""
    if name not in GRANT_ROUTES:
        return 401, {"detail": "Invalid API key"}
    if target == "other":
        return 401, {"detail": "Invalid grant"}
    if target == "other-header":
        return 403, {"detail": "X-Workspace-Id does not match the grant's workspace"}
    if name == "reveal-credential":
        return 403, {"detail": GRANT_USE_ONLY}
    return 409, {"detail": NOT_PROXYABLE}


def expected(
    who: Who, name: str, target: str, world: World, obj: dict[str, Any] | None, got: dict[str, Any], listed_own: Any
) -> tuple[int, Any]:
    endpoint = ENDPOINTS[name]
    if who.error:
        return who.error[0], {"detail": who.error[1]}
    if who.kind == "grant":
        return grant_expected(name, target)
    header_workspace = world.b if target == "other-header" else world.a
    if who.kind == "api_key" and header_workspace != world.a:
        return 403, {"detail": "X-Workspace-Id does not match the API key's workspace"}
    if who.kind == "user" and header_workspace not in who.workspaces:
        return 403, {"detail": "The user is not a member of the workspace named by X-Workspace-Id"}
    if endpoint.permission and endpoint.permission not in who.permissions:
        return 403, {"detail": forbidden_detail(who, endpoint.permission)}
    if name == "create-api-key" and "read" not in who.permissions:
        # A caller grants only what it holds: an admin-only key cannot mint a read key.
        return 403, {"detail": "Cannot grant the 'read' permission, which the caller lacks"}
    if target == "other":
        return 404, {"detail": "Credential not found" if endpoint.target == "credential" else "API key not found"}
    if name in {"proxy-call", "create-grant", "check-credential"}:
        return 409, {"detail": NOT_PROXYABLE}
    return 200, success_body(who, name, world, obj, got, listed_own)


def success_body(
    who: Who, name: str, world: World, obj: dict[str, Any] | None, got: dict[str, Any], listed_own: Any
) -> Any:
    if name == "create-credential":
        assert set(got) >= {"id", "created_at", "updated_at"}
        return {
            "label": "Stripe production",
            "description": None,
            "auth_type": "api_key",
            "credential_type": None,
            "credential_scope": "workspace",
            "provider": "custom",
            "user_id": None,
            "id": got["id"],
            "workspace_id": world.a,
            "created_by": who.actor,
            "status": "active",
            "expires_at": None,
            "last_used_at": None,
            "created_at": got["created_at"],
            "updated_at": got["updated_at"],
            "status_reason": None,
            "status_changed_at": None,
        }
    if name == "list-credentials":
        return {"credentials": [listed_own], "total": 1, "page": 1, "size": 100}
    if name in {"list-grants", "list-usage"}:
        return {"grants" if name == "list-grants" else "usage": [], "total": 0, "page": 1, "size": 100}
    assert obj is not None or name in {"create-api-key", "list-api-keys", "session"}
    if name == "get-credential":
        return obj
    if name == "update-credential":
        assert obj is not None
        return {**obj, "label": "changed", "updated_at": got["updated_at"]}
    if name == "delete-credential":
        assert obj is not None
        return {"id": obj["id"], "deleted": True}
    if name == "reveal-credential":
        assert obj is not None
        return {"id": obj["id"], "version": 1, "auth_type": "api_key", "credentials": {"api_key": "sk_matrix"}}
    if name == "create-api-key":
        assert got["key"].startswith("ck_")
        assert got["secret"].startswith(got["key"] + "_")
        return {
            "id": got["id"],
            "key": got["key"],
            "label": "new",
            "status": "active",
            "permissions": ["read"],
            "expires_at": None,
            "workspace_id": world.a,
            "created_by": who.actor,
            "created_at": got["created_at"],
            "updated_at": got["updated_at"],
            "secret": got["secret"],
        }
    if name == "list-api-keys":
        keys = sorted(world.keys_in_a, key=lambda k: (k["created_at"], k["id"]), reverse=True)
        return {"api_keys": keys, "total": len(keys), "page": 1, "size": 100}
    if name == "revoke-api-key":
        assert obj is not None
        return {**obj, "status": "revoked", "updated_at": got["updated_at"]}
    # session
    permissions = [p for p in ALL if p in who.permissions]
    if who.kind == "user":
        return {
            "user": {"id": who.actor, "email": f"{who.actor}@example.test", "name": None},
            "workspace": {"id": world.a},
            "workspace_user": {
                "role": who.role,
                "is_owner": who.role == "owner",
                "permissions": permissions,
                "status": "active",
            },
            "auth_type": "bearer_token",
            "auth_provider": who.provider,
            "api_key": None,
        }
    return {
        "user": None,
        "workspace": {"id": world.a},
        "workspace_user": {"role": None, "is_owner": False, "permissions": permissions, "status": "active"},
        "auth_type": "api_key",
        "auth_provider": "api_key",
        "api_key": {"id": who.actor, "label": who.label},
    }


@pytest.mark.parametrize(("caller", "endpoint", "target"), CELLS, ids=["/".join(cell) for cell in CELLS])
async def test_cell(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, caller: str, endpoint: str, target: str
) -> None:
    world = await build_world(client)
    spec = ENDPOINTS[endpoint]
    object_workspace = world.b if target == "other" else world.a
    obj: dict[str, Any] | None = None
    if spec.target == "credential":
        obj = await world.credential(object_workspace)
    elif spec.target == "key":
        _, obj = await world.key(object_workspace, ("read",))
    world.target_credential = obj if spec.target == "credential" else None
    listed_own = await world.credential(world.a) if endpoint == "list-credentials" else None
    if endpoint == "list-credentials":
        await world.credential(world.b)  # must not show up
    who = await CALLERS[caller](world)

    header_workspace = world.b if target == "other-header" else world.a
    response = await client.request(
        spec.method,
        spec.path.format(id=obj["id"] if obj else ""),
        json=spec.body,
        headers={**who.headers, "X-Workspace-Id": header_workspace},
    )

    got = response.json()
    status, body = expected(who, endpoint, target, world, obj, got if isinstance(got, dict) else {}, listed_own)
    assert (response.status_code, got) == (status, body)
    assert response.headers["content-type"] == "application/json"
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert "www-authenticate" not in response.headers
    if who.presented:
        assert who.presented not in caplog.text
