"""The HTTP floor: a bare ASGI app (no framework, no auth, no validation) doing exactly the backend operations
of each credentials endpoint and encoding the same JSON with msgspec. Served by the same uvicorn settings as
the service: ``python -m bench.serve bench.floor_app:create_app``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import msgspec

from bench.backend import Backend, NotFound

PREFIX = "/api/v1/credentials"
_JSON = [(b"content-type", b"application/json")]
_NOT_FOUND = msgspec.json.encode({"detail": "Credential not found"})


def create_app() -> Any:
    state: dict[str, Any] = {}

    async def read_body(receive: Any) -> bytes:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    async def respond(send: Any, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["opened"] = Backend.from_env()
                    state["backend"] = await state["opened"].__aenter__()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await state["opened"].__aexit__(None, None, None)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        backend = state["backend"]
        method, path = scope["method"], scope["path"].rstrip("/")
        if not path.startswith(PREFIX):
            await respond(send, 404, b'{"detail":"Not Found"}')
            return
        rest = path[len(PREFIX) :].strip("/").split("/") if path != PREFIX else []
        try:
            if not rest and method == "GET":
                query = parse_qs(scope["query_string"].decode())
                skip = int(query.get("skip", ["0"])[0])
                limit = int(query.get("limit", ["100"])[0])
                result: Any = await backend.list(skip, limit, query.get("search", [None])[0])
            elif not rest and method == "POST":
                result = await backend.create(msgspec.json.decode(await read_body(receive)))
            elif len(rest) == 1 and method == "GET":
                result = await backend.get(rest[0])
            elif len(rest) == 1 and method == "PUT":
                body = msgspec.json.decode(await read_body(receive))
                result = await backend.update(rest[0], body["label"])
            elif len(rest) == 1 and method == "DELETE":
                result = await backend.delete(rest[0])
            elif len(rest) == 2 and rest[1] == "reveal" and method == "POST":
                result = await backend.reveal(rest[0])
            else:
                await respond(send, 405, b'{"detail":"Method Not Allowed"}')
                return
        except NotFound:
            await respond(send, 404, _NOT_FOUND)
            return
        await respond(send, 200, msgspec.json.encode(result))

    return app
