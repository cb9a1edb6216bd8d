"""compose.yaml's `ha` profile: three OpenBao raft nodes, two service replicas that know every node, a proxy."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from service.config import Settings
from tests.support.compose import (
    HA_SERVICES,
    ROOT,
    config_path,
    hcl_block,
    mounts,
    posix_sh,
    service_environ,
    services,
)

NODES = ["http://openbao:8200", "http://openbao-2:8200", "http://openbao-3:8200"]


def test_every_ha_service_is_in_the_ha_profile_only() -> None:
    stack = services()

    assert {name: stack[name]["profiles"] for name in HA_SERVICES} == {name: ["ha"] for name in HA_SERVICES}


def test_the_extra_nodes_join_by_retry_join_and_declare_the_first_nodes_audit_device() -> None:
    stack = services()
    first = (ROOT / mounts(stack["openbao"])[config_path(stack["openbao"])]).read_text()

    for name in ("openbao-2", "openbao-3"):
        node = stack[name]
        config = (ROOT / mounts(node)[config_path(node)]).read_text()
        storage = hcl_block(config, r'storage\s+"raft"')
        joins = re.findall(r'retry_join\s*\{\s*leader_api_addr\s*=\s*"([^"]+)"\s*\}', storage)
        # OpenBao refuses to unseal a node whose declared audit devices differ from the cluster's.
        assert hcl_block(config, r'audit\s+"file"\s+"file"') == hcl_block(first, r'audit\s+"file"\s+"file"')
        assert joins == NODES
        assert node["environment"]["BAO_RAFT_NODE_ID"] == name
        assert node["environment"]["BAO_API_ADDR"] == f"http://{name}:8200"
        assert node["environment"]["BAO_CLUSTER_ADDR"] == f"https://{name}:8201"
        assert mounts(node)["/openbao/file"] == f"{name}-data"
    assert stack["openbao-ha-unseal"]["environment"]["JOIN_ADDRS"].split() == NODES[1:]


def test_each_replica_fails_over_across_every_node_with_approle(tmp_path: Path) -> None:
    (tmp_path / "role_id").write_text("compose-test-role-id\n")
    (tmp_path / "secret_id").write_text("compose-test-secret-id\n")
    (tmp_path / "database_url").write_text("postgresql://credentials:compose-test-password@postgres:5432/credentials")
    stack = services()

    for name in ("replica-1", "replica-2"):
        settings = Settings.from_env(service_environ(stack[name], tmp_path))

        assert settings.vault.addrs == tuple(NODES)
        assert settings.vault.uses_approle
        assert settings.dev_mode is False
        assert set(stack[name]["depends_on"]) == {"bootstrap", "openbao-ha-unseal", "postgres"}
        # Hardened and fed from secret files like the single service (issue 12's compose points).
        assert stack[name]["secrets"] == ["database_url"]
        assert stack[name]["read_only"] is True
        assert stack[name]["cap_drop"] == ["ALL"]


def test_the_proxy_spreads_over_both_replicas_and_retries_only_what_was_never_sent() -> None:
    proxy = services()["proxy"]
    conf = (ROOT / mounts(proxy)["/etc/nginx/nginx.conf"]).read_text()

    assert re.findall(r"^\s*server (\S+) ", conf, re.MULTILINE) == ["replica-1:8000", "replica-2:8000"]
    # nginx never passes a sent non-idempotent request (POST, PUT, DELETE) to the next server unless told to.
    assert re.search(r"proxy_next_upstream error;", conf)
    assert not re.search(r"^\s*proxy_next_upstream[^;]*non_idempotent", conf, re.MULTILINE)
    assert proxy["ports"] == ["127.0.0.1:8080:8080"]


def test_the_join_script_parses_as_posix_sh() -> None:
    script = ROOT / "vault" / "compose-join.sh"
    result = subprocess.run([posix_sh(), "-n", str(script)], capture_output=True, text=True, check=False)

    assert (result.returncode, result.stderr) == (0, "")
