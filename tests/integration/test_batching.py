"""Concurrent encrypts and decrypts share one transit ``batch_input`` call: each item keeps its own context, each
request gets its own result or its own error, and the call's audit entry names every request it served."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devtools.stack import BaoServer
from vault.errors import VaultRequestRejected
from vault.secret import Secret
from vault.store import CallContext, FastPath, SecretStore


@pytest.fixture
async def store(bao: BaoServer) -> AsyncIterator[SecretStore]:
    # A wide window, so that the concurrent calls of a test surely share one batch.
    store = SecretStore.connect(bao.addr, bao.token, workers=4, timeout=10, fast_path=FastPath(batch_max_wait=0.05))
    yield store
    await store.aclose()


def transit_entries(bao: BaoServer, offset: int, operation: str) -> list[dict[str, Any]]:
    with bao.audit_log.open("rb") as log:
        log.seek(offset)
        entries = [json.loads(line) for line in log.read().splitlines()]
    return [
        e for e in entries if e["type"] == "response" and e["request"]["path"] == f"transit/{operation}/credentials"
    ]


def contexts(n: int) -> list[CallContext]:
    tag = secrets.token_hex(4)
    return [CallContext(request_id=f"req-{tag}-{i}", actor=f"actor-{i}", workspace=f"wsp_{tag}_{i}") for i in range(n)]


async def test_concurrent_encrypts_share_one_call_that_names_every_request(store: SecretStore, bao: BaoServer) -> None:
    callers = contexts(5)
    ids = [str(uuid.uuid4()) for _ in callers]
    offset = bao.audit_log.stat().st_size

    ciphertexts = await asyncio.gather(
        *(
            store.encrypt(ctx, cid, Secret(f"value-{i}".encode()))
            for i, (ctx, cid) in enumerate(zip(callers, ids, strict=True))
        )
    )

    calls = transit_entries(bao, offset, "encrypt")
    assert len(calls) == 1
    headers = calls[0]["request"]["headers"]
    # One value per item, in the items' order: item i belongs to the i-th request id, actor and workspace.
    assert headers["x-request-id"] == [c.request_id for c in callers]
    assert headers["x-credentials-actor"] == [c.actor for c in callers]
    assert headers["x-credentials-workspace"] == [c.workspace for c in callers]
    assert len(calls[0]["response"]["data"]["batch_results"]) == 5
    # Each ciphertext decrypts with its own context only, back to its own value.
    for i, (ctx, cid, ciphertext) in enumerate(zip(callers, ids, ciphertexts, strict=True)):
        version = await store.write_ciphertext(ctx, cid, ciphertext, 0)
        assert (await store.read(ctx, cid, version)).reveal() == f"value-{i}".encode()


async def test_an_item_error_is_raised_in_its_own_request_only(store: SecretStore, bao: BaoServer) -> None:
    callers = contexts(3)
    ids = [str(uuid.uuid4()) for _ in callers]
    versions = []
    for i, (ctx, cid) in enumerate(zip(callers, ids, strict=True)):
        versions.append(await store.create(ctx, cid, Secret(f"secret-{i}".encode())))
    # The middle request reads the first one's ciphertext under its own context: it cannot decrypt.
    theft = await store.read_ciphertext(callers[0], ids[0], 1)
    await store.write_ciphertext(callers[1], ids[1], theft, 1)
    offset = bao.audit_log.stat().st_size

    results = await asyncio.gather(
        *(store.read(ctx, cid, 2 if i == 1 else 1) for i, (ctx, cid) in enumerate(zip(callers, ids, strict=True))),
        return_exceptions=True,
    )

    first, stolen, third = results
    assert isinstance(stolen, VaultRequestRejected)
    assert isinstance(first, Secret)
    assert isinstance(third, Secret)
    assert (first.reveal(), third.reveal()) == (b"secret-0", b"secret-2")
    # The KV reads before the decrypts end at different times, so the decrypts may fall into one or two windows;
    # either way every request is named, once, by the call that carried its item.
    calls = transit_entries(bao, offset, "decrypt")
    named = [rid for call in calls for rid in call["request"]["headers"]["x-request-id"]]
    assert sorted(named) == sorted(c.request_id for c in callers)


async def test_a_failed_call_fails_every_request_it_served(bao: BaoServer) -> None:
    # A token Vault refuses: the whole call answers 403, and each request of the batch gets that error.
    store = SecretStore.connect(bao.addr, "not-a-token", workers=1, timeout=5, fast_path=FastPath(batch_max_wait=0.05))
    try:
        results = await asyncio.gather(
            *(store.encrypt(ctx, str(uuid.uuid4()), Secret(b"x")) for ctx in contexts(3)), return_exceptions=True
        )
    finally:
        await store.aclose()
    assert [type(r).__name__ for r in results] == ["VaultPermissionDenied"] * 3
    assert len({id(r) for r in results}) == 3  # one exception object per request
