"""Identity and access end to end: `credctl serve` on a port, keys from the CLI and the API, user tokens, over HTTP."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.config import Settings
from tests.support.api import new_credential
from tests.support.servers import credctl, env_for, serving
from tests.support.tokens import AUDIENCE, HS256_SECRET, ISSUER, mint


@pytest.fixture
def served_with_tokens(settings: Settings, jwks_file: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = env_for(
        settings,
        CREDENTIALS_JWT_HS256_SECRET=HS256_SECRET,
        CREDENTIALS_JWT_PUBLIC_KEYS_FILE=str(jwks_file),
        CREDENTIALS_JWT_ISSUER=ISSUER,
        CREDENTIALS_JWT_AUDIENCE=AUDIENCE,
    )
    with serving(env) as server:
        yield server.url, env
    # Nothing presented by a caller reaches the server's own output.
    assert HS256_SECRET not in server.output


@pytest.mark.e2e
def test_keys_users_and_scopes_end_to_end(served_with_tokens: tuple[str, dict[str, str]]) -> None:
    url, env = served_with_tokens
    workspace = f"wsp_{secrets.token_hex(4)}"
    admin_key = credctl(
        "api-key", "create", "--workspace", workspace, "--permissions", "read,write,reveal,admin", env=env
    )
    assert admin_key.returncode == 0, admin_key.stderr
    admin = {"Authorization": f"Bearer {admin_key.stdout.strip()}"}
    alice, bob = f"usr_alice_{secrets.token_hex(3)}", f"usr_bob_{secrets.token_hex(3)}"
    as_alice = {"Authorization": f"Bearer supabase_{mint(alice, [{'id': workspace, 'role': 'member'}])}"}
    bob_token = mint(bob, {workspace: "viewer", "wsp_elsewhere": "owner"}, algorithm="ES256", kid="ec-1")
    as_bob = {"Authorization": f"Bearer {bob_token}"}

    with httpx.Client(base_url=f"{url}/api/v1", timeout=10) as http:
        session = http.get("/auth/session", headers=as_alice).json()
        assert (session["user"]["id"], session["workspace_user"]["role"], session["auth_provider"]) == (
            alice,
            "member",
            "supabase",
        )
        assert http.get("/auth/session", headers=as_bob).status_code == 400
        as_bob["X-Workspace-Id"] = workspace

        private = http.post("/credentials", json=new_credential(credential_scope="user"), headers=as_alice).json()
        shared = http.post("/credentials", json=new_credential(), headers=as_alice).json()
        assert (private["user_id"], private["created_by"]) == (alice, alice)
        assert [c["id"] for c in http.get("/credentials", headers=as_bob).json()["credentials"]] == [shared["id"]]
        assert http.get(f"/credentials/{private['id']}", headers=as_bob).json() == {"detail": "Credential not found"}
        assert http.post(f"/credentials/{shared['id']}/reveal", headers=as_bob).json() == {
            "detail": "The 'viewer' role lacks the 'reveal' permission"
        }
        listed = http.get("/credentials", headers=admin).json()["credentials"]
        assert [c["id"] for c in listed] == [shared["id"], private["id"]]

        made = http.post("/api-keys", json={"label": "ci", "permissions": ["read"]}, headers=admin)
        assert made.status_code == 200
        ci = {"X-API-Key": made.json()["secret"]}
        assert http.get("/credentials", headers=ci).json()["total"] == 1  # workspace credentials only
        assert http.post("/api-keys", json={"label": "x"}, headers=ci).json() == {
            "detail": "This API key lacks the 'admin' permission"
        }
        revoked = credctl("api-key", "revoke", made.json()["id"], env=env)
        assert (revoked.returncode, revoked.stdout) == (0, f"revoked {made.json()['id']}\n")
        assert http.get("/credentials", headers=ci).json() == {"detail": "Invalid API key"}
        assert http.get(
            "/credentials", headers={"Authorization": f"Bearer {mint(alice, {}, lifetime=-600)}"}
        ).json() == {"detail": "Token has expired"}


def test_cli_keys_can_expire_and_be_revoked_only_once(settings: Settings) -> None:
    env = env_for(settings)
    bad = credctl("api-key", "create", "--workspace", "w", "--expires-at", "2001-01-01T00:00:00+00:00", env=env)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert "expires_at must be a time in the future" in bad.stderr
    made = credctl("api-key", "create", "--workspace", "w", "--expires-at", "2999-01-01", env=env)
    assert made.returncode == 0, made.stderr
    unknown = credctl("api-key", "revoke", "00000000-0000-4000-8000-000000000000", env=env)
    assert (unknown.returncode, unknown.stdout) == (2, "")
    assert "no active or inactive API key" in unknown.stderr
