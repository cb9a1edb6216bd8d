"""Guards that a green suite used to miss: KV's create-only write, and the in-process single flight of refreshes.

Both were found by injecting bugs into a copy: dropping ``cas=0`` from the create write, or making the single flight
a pass-through, left every other test green (the row lock still allows one provider call). These tests fail then.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest

from db import database
from devtools.stack import BaoServer
from service.oauth.single_flight import SingleFlight
from tests.support.api import Caller
from tests.support.oauth import TokenEndpoint, create_oauth, oauth_secret, reveal
from vault.errors import VersionConflict
from vault.secret import Secret
from vault.store import CallContext, SecretStore


@pytest.fixture
async def store(bao: BaoServer) -> Any:
    connected = SecretStore.connect(bao.addr, bao.token, workers=2, timeout=10)
    yield connected
    await connected.aclose()


async def test_a_second_create_at_the_same_path_is_refused_and_the_first_secret_kept(store: SecretStore) -> None:
    call = CallContext(request_id="req-1", actor="tester", workspace=f"wsp_{secrets.token_hex(4)}")
    cid = str(uuid.uuid4())
    first = await store.create(call, cid, Secret(b'{"api_key": "first"}'))
    assert first.version == 1

    with pytest.raises(VersionConflict):
        await store.create(call, cid, Secret(b'{"api_key": "second"}'))

    assert (await store.read(call, cid, 1)).reveal() == b'{"api_key": "first"}'
    metadata = await store.metadata(call, cid)
    assert metadata is not None
    assert metadata["current_version"] == 1
    await store.destroy(call, cid)


class TransactionGauge:
    """Counts the database transactions opened (each holds a pooled connection) and the most open at once."""

    def __init__(self, real: Callable[[], Any]) -> None:
        self.real, self.opened, self.open, self.peak = real, 0, 0, 0

    def __call__(self) -> Any:
        @contextlib.asynccontextmanager
        async def counted() -> AsyncIterator[Any]:
            self.opened += 1
            self.open += 1
            self.peak = max(self.peak, self.open)
            try:
                async with self.real() as transaction:
                    yield transaction
            finally:
                self.open -= 1

        return counted()


class NoSingleFlight:
    """The bug the test must catch: every caller runs its own refresh attempt."""

    async def run(self, key: object, start: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        return await start()


@pytest.mark.parametrize("single_flight", [True, False], ids=["single-flight", "disabled"])
async def test_fifty_concurrent_reveals_of_a_due_token_take_one_connection_for_the_refresh(
    app: httpx.AsyncClient,
    caller: Caller,
    endpoint: TokenEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    single_flight: bool,
) -> None:
    """With the single flight, one refresh transaction serves the 50 callers; without it (the injected bug), each
    caller opens a transaction and queues on the row lock, holding a pooled connection while it waits."""
    created = await create_oauth(app, caller, oauth_secret(endpoint))
    endpoint.delay = 0.2
    gauge = TransactionGauge(database.transaction)
    monkeypatch.setattr(database, "transaction", gauge)
    if not single_flight:
        monkeypatch.setattr(SingleFlight, "run", NoSingleFlight.run)

    responses = await asyncio.gather(*(reveal(app, caller, created["id"]) for _ in range(50)))

    assert [r.status_code for r in responses] == [200] * 50
    assert endpoint.calls == 1  # the row lock alone keeps this at one either way
    if single_flight:
        assert (gauge.opened, gauge.peak) == (1, 1)
    else:
        # Every caller that read the token before the refresh committed queues on the lock with a connection.
        assert gauge.opened > 1
        assert gauge.peak > 1
    print(f"\n[single flight {single_flight}] refresh transactions: {gauge.opened}, at once: {gauge.peak}")
