"""The third party of the proxy bench: a minimal ASGI app answering a small JSON body (``uvicorn bench.upstream:app``)."""

from __future__ import annotations

from typing import Any

BODY = b'{"object":"balance","available":[{"amount":100,"currency":"usd"}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
