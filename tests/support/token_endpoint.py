"""A scripted OAuth token endpoint on 127.0.0.1: answers whatever status, headers and body the test sets, and
records the headers of each request (a real HTTP server, uvicorn in a thread of its own)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tests.support.servers import asgi_on_loopback


@dataclass
class ScriptedEndpoint:
    url: str = ""
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=lambda: [(b"content-type", b"application/json")])
    body: bytes = b"{}"
    requests: list[dict[str, str]] = field(default_factory=list)

    def answer(self, status: int, body: bytes | dict[str, Any], **headers: str) -> None:
        self.status = status
        self.body = body if isinstance(body, bytes) else msgspec.json.encode(body)
        self.headers = [(b"content-type", b"application/json")]
        self.headers += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        self.requests.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


@contextlib.contextmanager
def scripted_endpoint() -> Iterator[ScriptedEndpoint]:
    endpoint = ScriptedEndpoint()
    with asgi_on_loopback(endpoint, "token endpoint") as (url, _):
        endpoint.url = f"{url}/oauth/token"
        yield endpoint
