"""The Vault failover policy (vault/nodes.py): which addresses, what a failure means, what may be sent twice."""

from __future__ import annotations

import aiohttp
import pytest
import requests
from urllib3.exceptions import NewConnectionError, ProtocolError

from devtools.stack import free_port
from service.config import ConfigError, VaultSettings
from vault.nodes import (
    Failure,
    NodeRing,
    RetryPolicy,
    Walk,
    cas_of,
    classify_exception,
    classify_response,
    landed_write,
    parse_addrs,
)

POLICY = RetryPolicy(kv_mount="credentials", transit_mount="transit")


def test_addresses_come_from_vault_addr_then_the_cluster_list_without_repeats() -> None:
    assert parse_addrs("http://a:8200", " http://b:8200/, http://a:8200 ,,http://c:8200") == (
        "http://a:8200",
        "http://b:8200",
        "http://c:8200",
    )
    assert parse_addrs("http://a:8200", None) == ("http://a:8200",)


@pytest.mark.parametrize("bad", ["a:8200", "ftp://a", "http://a:8200/v1", "http://"])
def test_an_address_that_is_not_a_vault_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a Vault address"):
        parse_addrs("http://a:8200", bad)


def test_the_settings_name_both_variables_when_an_address_is_wrong() -> None:
    environ = {"VAULT_ADDR": "http://a:8200", "VAULT_TOKEN": "t", "CREDENTIALS_VAULT_ADDRS": "b:8200"}
    with pytest.raises(ConfigError, match="VAULT_ADDR / CREDENTIALS_VAULT_ADDRS: 'b:8200' is not a Vault address"):
        VaultSettings.from_env(environ)
    environ["CREDENTIALS_VAULT_ADDRS"] = "http://b:8200,http://c:8200"
    assert VaultSettings.from_env(environ).addrs == ("http://a:8200", "http://b:8200", "http://c:8200")


@pytest.mark.parametrize(
    ("path", "status", "failure"),
    [
        ("/v1/transit/encrypt/k", 503, Failure.REFUSED),  # sealed, or a standby that knows no leader
        ("/v1/transit/encrypt/k", 501, Failure.REFUSED),  # not initialised
        ("/v1/transit/encrypt/k", 307, Failure.REFUSED),  # a standby pointing at the active node
        ("/v1/sys/health", 429, Failure.REFUSED),  # a standby's health code
        ("/v1/credentials/data/x", 500, Failure.LOST),  # forwarding failed: the write may have landed
        ("/v1/credentials/data/x", 502, Failure.LOST),
        ("/v1/credentials/data/x", 429, None),  # a rate-limit quota holds on every node: pass it on
        ("/v1/credentials/data/x", 400, None),
        ("/v1/credentials/data/x", 404, None),
        ("/v1/credentials/data/x", 200, None),
    ],
)
def test_responses_are_classified(path: str, status: int, failure: Failure | None) -> None:
    assert classify_response(path, status) is failure


def test_a_standby_that_finds_no_active_node_refused_rather_than_lost_the_call() -> None:
    # OpenBao 2.7's answer from a standby during an election (seen in the leader-kill drill).
    text = '{"errors":["local node not active but active cluster node not found"]}'

    assert classify_response("/v1/credentials/data/x", 500, text) is Failure.REFUSED
    assert classify_response("/v1/credentials/data/x", 500, '{"errors":["internal error"]}') is Failure.LOST


def test_a_refused_connection_is_unreachable_and_a_dropped_one_is_lost() -> None:
    refused = requests.exceptions.ConnectionError(
        requests.packages.urllib3.exceptions.MaxRetryError(  # type: ignore[attr-defined]
            None, "/", NewConnectionError(None, "Connection refused")
        )
    )
    dropped = requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))

    assert classify_exception(refused) is Failure.UNREACHABLE
    assert classify_exception(requests.exceptions.ConnectTimeout()) is Failure.UNREACHABLE
    assert classify_exception(dropped) is Failure.LOST
    assert classify_exception(requests.exceptions.ReadTimeout()) is Failure.LOST


@pytest.mark.parametrize(
    ("method", "path", "body", "safe"),
    [
        ("GET", "/v1/credentials/data/workspaces/w/credentials/c", None, True),
        ("LIST", "/v1/credentials/metadata/workspaces/", None, True),
        ("POST", "/v1/transit/encrypt/credentials", {"plaintext": "x"}, True),
        ("POST", "/v1/transit/decrypt/credentials", {"ciphertext": "x"}, True),
        ("POST", "/v1/transit/rewrap/credentials", {"batch_input": []}, True),
        ("POST", "/v1/transit/keys/credentials/rotate", None, False),  # twice would rotate twice
        ("POST", "/v1/credentials/data/workspaces/w/credentials/c", {"data": {}, "options": {"cas": 0}}, True),
        ("POST", "/v1/credentials/data/workspaces/w/credentials/c", {"data": {}, "options": {"cas": 3}}, True),
        ("POST", "/v1/credentials/data/workspaces/w/credentials/c", {"data": {}}, False),  # no cas: could write twice
        ("POST", "/v1/credentials/metadata/workspaces/w/credentials/c", {"max_versions": 10}, True),
        ("DELETE", "/v1/credentials/metadata/workspaces/w/credentials/c", None, True),
        ("POST", "/v1/credentials/destroy/workspaces/w/credentials/c", {"versions": [2]}, True),
        ("POST", "/v1/auth/approle/login", {"role_id": "r"}, True),
        ("POST", "/v1/sys/policies/acl/p", {"policy": ""}, False),
        ("POST", "/v1/other/data/x", {"data": {}, "options": {"cas": 0}}, False),  # not the service's KV mount
    ],
)
def test_only_requests_that_are_safe_to_repeat_are_sent_again(method: str, path: str, body: object, safe: bool) -> None:
    assert POLICY.replay_safe(method, path, body) is safe


def test_a_lost_cas_write_is_checked_by_reading_the_version_it_asked_for() -> None:
    body = {"data": {"ciphertext": "vault:v1:abc"}, "options": {"cas": 4}}
    assert POLICY.cas_read_path("POST", "/v1/credentials/data/w/c", body) == "/v1/credentials/data/w/c?version=5"
    assert POLICY.cas_read_path("POST", "/v1/transit/encrypt/k", body) is None
    assert cas_of({"options": {"cas": True}}) is None
    assert cas_of({"options": {}}) is None


@pytest.mark.parametrize("addrs", [["https://bao1:8200"], ["https://bao1:8200", "https://bao2:8200"]])
def test_every_hvac_session_checks_vault_against_the_ca_it_is_given_and_nothing_from_the_environment(
    addrs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi

    from vault.client import make_client
    from vault.nodes import FailoverSession

    # requests would read these when trust_env is on, hvac when no verify is passed: neither may count.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/requests.pem")
    monkeypatch.setenv("VAULT_CACERT", "/nonexistent/vault.pem")
    with_ca = make_client(addrs, "", pool_size=1, timeout=1, cacert=certifi.where())
    without = make_client(addrs, "", pool_size=1, timeout=1)

    # One node: a plain session; several: the failover session, whose health probes use the session's setting.
    assert isinstance(with_ca.adapter.session, FailoverSession) is (len(addrs) > 1)
    assert (with_ca.adapter.session.verify, with_ca.adapter._kwargs["verify"]) == (certifi.where(), certifi.where())
    assert (without.adapter.session.verify, without.adapter._kwargs["verify"]) == (True, True)
    assert with_ca.adapter.session.trust_env is False


def test_a_walk_starts_at_the_node_that_served_last_and_pauses_between_rounds() -> None:
    ring = NodeRing(["http://a:8200", "http://b:8200", "http://c:8200"], pause_seconds=0.01)
    ring.moved_to(1)
    walk = Walk(ring, replay_safe=True, wait_seconds=0.0)

    steps = list(walk)

    assert steps == [(1, 0.0), (2, 0.0), (0, 0.0)]  # one round: the wait is over
    ring.moved_to(2)
    rounds = iter(Walk(ring, replay_safe=True, wait_seconds=5.0))
    assert [next(rounds) for _ in range(4)] == [(2, 0.0), (0, 0.0), (1, 0.0), (2, 0.01)]


def test_a_walk_goes_on_after_refusals_but_after_a_lost_call_only_once_and_only_when_safe() -> None:
    ring = NodeRing(["http://a:8200", "http://b:8200"])
    safe = Walk(ring, replay_safe=True, wait_seconds=1.0)
    unsafe = Walk(ring, replay_safe=False, wait_seconds=1.0)

    assert [safe.failed(0, f, "POST", "/v1/x") for f in (Failure.REFUSED, Failure.UNREACHABLE)] == [True, True]
    assert safe.failed(0, Failure.LOST, "POST", "/v1/x") is True
    assert safe.lost is True
    assert safe.failed(1, Failure.LOST, "POST", "/v1/x") is False
    assert unsafe.failed(0, Failure.REFUSED, "POST", "/v1/x") is True
    assert unsafe.failed(0, Failure.LOST, "POST", "/v1/x") is False


def test_a_lost_write_counts_as_landed_only_when_the_version_read_back_holds_the_data_sent() -> None:
    body = {"options": {"cas": 0}, "data": {"ciphertext": "vault:v1:abc"}}
    metadata = {"version": 1, "created_time": "2026-01-01T00:00:00Z"}

    assert landed_write(body, {"data": {"data": {"ciphertext": "vault:v1:abc"}, "metadata": metadata}}) == {
        "data": metadata
    }
    assert landed_write(body, {"data": {"data": {"ciphertext": "vault:v1:other"}, "metadata": metadata}}) is None


async def test_aiohttp_errors_are_classified_like_requests_ones() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await session.get(f"http://127.0.0.1:{free_port()}/v1/sys/health")

    assert classify_exception(refused.value) is Failure.UNREACHABLE
    assert classify_exception(aiohttp.ServerDisconnectedError()) is Failure.LOST
    assert classify_exception(aiohttp.ClientOSError(104, "Connection reset by peer")) is Failure.LOST
    assert classify_exception(TimeoutError()) is Failure.LOST


def test_only_a_call_that_moved_moves_the_ring_and_the_active_node_is_looked_up_after_it() -> None:
    ring = NodeRing(["http://a:8200", "http://b:8200"], pause_seconds=0.0)
    assert ring.lookup_due()  # several nodes: the first call looks the active node up
    ring.found_active(0)
    assert not ring.lookup_due()

    Walk(ring, replay_safe=True, wait_seconds=1.0).served(1)  # answered without a failure: no move
    assert (ring.preferred, ring.lookup_due()) == ("http://a:8200", False)

    moved = Walk(ring, replay_safe=True, wait_seconds=1.0)
    moved.failed(0, Failure.REFUSED, "GET", "/v1/x")
    moved.served(1)
    assert ring.preferred == "http://b:8200"
    assert ring.lookup_due()  # b may be a standby: the next call asks sys/health again
