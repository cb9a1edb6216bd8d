"""AppRole secret ids as the compose stack issues them: with a lifetime, and bound to the service's network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from devtools import stack
from devtools.stack import BaoServer
from vault.bootstrap import bootstrap, issue_secret_id
from vault.client import make_client

NAMES = {"transit_mount": "transit", "transit_key": "credentials", "kv_mount": "credentials"}


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[hvac.Client]:
    server: BaoServer = stack.start_bao(tmp_path / "bao", audit=False)
    client = make_client(server.addr, server.token, pool_size=1, timeout=10)
    try:
        yield client
    finally:
        client.adapter.close()
        server.stop()


def _login(admin: hvac.Client, role_id: str, secret_id: str) -> int:
    response = admin.adapter.post("/v1/auth/approle/login", json={"role_id": role_id, "secret_id": secret_id})
    return int(response["auth"]["lease_duration"])


def test_secret_ids_expire_and_work_only_from_the_bound_network(admin: hvac.Client) -> None:
    bootstrap(admin, **NAMES, secret_id_ttl="1h", secret_id_cidrs=("127.0.0.1/32",))
    role = admin.adapter.get("/v1/auth/approle/role/credentials-service")["data"]
    assert (role["secret_id_ttl"], role["secret_id_bound_cidrs"]) == (3600, ["127.0.0.1/32"])
    assert role["token_bound_cidrs"] == ["127.0.0.1"]  # Vault keeps a /32 as the bare address
    role_id, secret_id = issue_secret_id(admin)
    looked_up = admin.adapter.post(
        "/v1/auth/approle/role/credentials-service/secret-id/lookup", json={"secret_id": secret_id}
    )["data"]
    assert looked_up["secret_id_ttl"] == 3600  # the CIDRs bind at the role: the login below shows them at work
    assert _login(admin, role_id, secret_id) > 0  # the tests run on loopback: inside the bound network

    # Bound elsewhere, a new secret id is refused from here.
    steps = bootstrap(admin, **NAMES, secret_id_ttl="1h", secret_id_cidrs=("10.9.0.0/16",))
    assert [step.changed for step in steps if "AppRole role" in step.what] == [True]
    role_id, elsewhere = issue_secret_id(admin)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        _login(admin, role_id, elsewhere)

    again = bootstrap(admin, **NAMES, secret_id_ttl="1h", secret_id_cidrs=("10.9.0.0/16",))
    assert not any(step.changed for step in again)
