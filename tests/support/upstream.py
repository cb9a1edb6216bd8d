"""A third-party API for the proxy tests: a real HTTP server on 127.0.0.1 (uvicorn in a thread of its own) that
records every request it receives and answers as its path asks.

- ``/slow/...``: answers after ``slow_seconds``; ``/big/...``: a body of ``big_bytes`` with its Content-Length;
  ``/redirect/...``: 302 elsewhere; ``/echo/...``: 302 whose headers repeat the query and the Authorization
  header; ``/mirror/...`` (``/mirror-stream/...`` in 5-byte pieces): 200 whose body repeats the request's headers
  and query; ``/cookies/...``: two Set-Cookie and two Link headers; ``/status/<n>``: status n; ``/oauth/...``: 401 unless the bearer token is in
  ``valid_tokens``; anything else: 200 with a small JSON body (never echoing a header).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import uvicorn

from tests.support.servers import asgi_on_loopback, read_body


@dataclass
class Received:
    method: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    slow_seconds: float = 3.0
    big_bytes: int = 100_000
    server: uvicorn.Server | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.valid_tokens.clear()

    @property
    def open_connections(self) -> int:
        assert self.server is not None
        return len(self.server.server_state.connections)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await read_body(receive)
        raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        with self.lock:
            self.received.append(
                Received(scope["method"], raw_path, scope["query_string"].decode("latin-1"), headers, body)
            )
        path = scope["path"]
        if path.startswith("/slow"):
            await asyncio.sleep(self.slow_seconds)
        if path.startswith("/stream"):
            # No Content-Length: the size shows only while streaming.
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for _ in range(self.big_bytes // 1000):
                await send({"type": "http.response.body", "body": b"y" * 1000, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path.startswith("/mirror"):
            # httpbin's /anything: the request's headers and query in the body, whole or in 5-byte pieces (so that
            # what it echoes straddles the pieces).
            mirrored = msgspec.json.encode({"headers": headers, "query": scope["query_string"].decode("latin-1")})
            if not path.startswith("/mirror-stream"):
                await _answer(send, 200, mirrored, b"application/json")
                return
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for start in range(0, len(mirrored), 5):
                await send({"type": "http.response.body", "body": mirrored[start : start + 5], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path.startswith("/big"):
            await _answer(send, 200, b"x" * self.big_bytes, b"application/octet-stream")
        elif path.startswith("/cookies"):
            repeated = [
                (b"set-cookie", b"session=abc; Path=/; HttpOnly"),
                (b"set-cookie", b"theme=dark; Path=/"),
                (b"link", b'<https://upstream.example/page/2>; rel="next"'),
                (b"link", b'<https://upstream.example/page/9>; rel="last"'),
            ]
            await _answer(send, 200, b"{}", b"application/json", repeated)
        elif path.startswith("/echo"):
            # A careless upstream: the redirect and a Link repeat the query; a header repeats the credentials.
            query = scope["query_string"]
            echoed = [
                (b"location", self.url.encode() + b"/landing?" + query),
                (b"link", b"<" + self.url.encode() + b"/next?" + query + b'>; rel="next"'),
                (b"x-echo-authorization", headers.get("authorization", "-").encode("latin-1")),
                (b"x-echo-query", query),
                (b"x-kept", b"plain"),
            ]
            await _answer(send, 302, b"", b"text/plain", echoed)
        elif path.startswith("/redirect"):
            await _answer(send, 302, b"", b"text/plain", [(b"location", b"https://elsewhere.example/landing")])
        elif path.startswith("/status/"):
            await _answer(send, int(path.rsplit("/", 1)[1]), b"{}", b"application/json")
        elif path.startswith("/oauth"):
            token = headers.get("authorization", "").removeprefix("Bearer ")
            with self.lock:
                ok = token in self.valid_tokens
            await _answer(send, 200 if ok else 401, b'{"ok": %s}' % (b"true" if ok else b"false"), b"application/json")
        else:
            payload = msgspec.json.encode({"ok": True, "method": scope["method"], "path": raw_path})
            extra = [(b"connection", b"x-hop"), (b"x-hop", b"1"), (b"x-upstream", b"yes")]
            await _answer(send, 200, payload, b"application/json", extra)


async def _answer(
    send: Any, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def running_upstream() -> Iterator[Upstream]:
    upstream = Upstream()
    with asgi_on_loopback(upstream, "upstream", timeout_keep_alive=30) as (url, server):
        upstream.url, upstream.server = url, server
        yield upstream


# Fixtures (a pytest plugin of the suite, tests/conftest.py): one upstream per test module, reset for each test.
@pytest.fixture(scope="module")
def upstream_server() -> Iterator[Upstream]:
    with running_upstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(upstream_server: Upstream) -> Upstream:
    upstream_server.reset()
    return upstream_server
