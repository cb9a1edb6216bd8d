"""``service.proxy.service.masked``: an echoed secret is masked wherever the upstream's chunks cut it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest

from service.proxy.service import body_forms, masked

SECRET = 'sk_live_a/b+c d"e'


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _read(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


ECHO = (
    b'{"raw": "' + SECRET.encode() + b'", "query": "key=' + quote(SECRET, safe="").encode()
    + b'", "json": ' + json.dumps(SECRET).encode() + b', "other": "kept"}'
)  # fmt: skip


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, 1000])
async def test_every_form_is_masked_in_place_whatever_the_chunk_size(size: int) -> None:
    out = await _read(masked(_chunks(ECHO, size), body_forms([SECRET])))
    assert len(out) == len(ECHO)
    assert SECRET.encode() not in out
    assert quote(SECRET, safe="").encode() not in out
    assert json.dumps(SECRET)[1:-1].encode() not in out
    assert out.count(b"*" * len(SECRET)) >= 1
    assert out.endswith(b'"other": "kept"}')
    # Outside the masks, the bytes are the upstream's.
    assert [a == b for a, b in zip(out, ECHO, strict=True) if a != ord("*")] == [True] * sum(c != ord("*") for c in out)


async def test_without_secrets_the_body_passes_untouched() -> None:
    assert await _read(masked(_chunks(ECHO, 3), body_forms([""]))) == ECHO
