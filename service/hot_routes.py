"""The hottest routes, answered without Litestar's per-request machinery: get, update and delete of one credential,
and a page of the list.

They are the service's most frequent calls and its cheapest (one or two Postgres round trips). A py-spy profile
of `just bench` at concurrency 32 showed Litestar's routing, guard (it copies the route handler per request),
signature model, dependency resolution and response objects costing more CPU than the request's own work. This
layer, put in front of Litestar's router, answers those routes itself with the same pieces Litestar's handlers
use: the guard's ``admit`` (authentication, throttle, permission), the ``CredentialService`` methods, the schemas
(decoded strictly, encoded by msgspec once) and the error mapping of ``service.errors``.

Anything it would not answer exactly as Litestar does goes to Litestar unchanged: another method, a query string
(on the list, anything but ``skip`` and ``limit`` in plain digits: filters, search and cursors are Litestar's), a
trailing slash, a ``root_path``, an invalid Host, a PUT body without a Content-Length (or over the limit), an
``If-Match`` over its length limit, and a body msgspec cannot decode strictly (Litestar then reports it, with the
body replayed). ``tests/integration/test_hot_routes.py`` sends each case to both and compares the answers.
``CREDENTIALS_FAST_ROUTES=false`` turns the layer off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar._asgi.utils import is_valid_host
from litestar.connection import ASGIConnection

from service.auth.guard import admit
from service.auth.principal import Permission
from service.context import RequestContext
from service.credentials.controller import IF_MATCH_MAX, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX
from service.credentials.schemas import CredentialDeleted, CredentialUpdate
from service.credentials.service import CredentialService, ListQuery
from service.errors import EXCEPTION_HANDLERS
from service.openapi import needs
from service.paging import check_skip

# Plain ASGI here, as in ``service.telemetry.middleware``: Litestar's TypedDict unions would need a cast per key.
Scope = Any
Receive = Any
Send = Any
Message = Any
ASGIApp = Any

LIST = "/api/v1/credentials"
PREFIX = LIST + "/"
TEMPLATE = PREFIX + "{credential_id}"
"""The route's template as Litestar names it (metrics and access lines label requests by it)."""
_SIBLINGS = frozenset({"auth-types"})
"""Static routes beside ``{credential_id}`` (Litestar prefers them to the parameter)."""
_OPT = {"GET": needs(Permission.read), "PUT": needs(Permission.write), "DELETE": needs(Permission.write)}
_UPDATE = msgspec.json.Decoder(CredentialUpdate)
_ENCODE = msgspec.json.Encoder().encode


class _HandOver(Exception):
    """This request is Litestar's to answer (with the body read so far)."""

    def __init__(self, body: bytes | None = None) -> None:
        self.body = body
        """What was read of the body (None: nothing)."""


@dataclass(frozen=True, slots=True)
class _Hot:
    """A request this layer answers: one credential's get, update or delete, or a page of the list."""

    method: str
    credential_id: str | None = None
    """None: the list."""
    skip: int = 0
    limit: int = LIST_LIMIT_DEFAULT


def _page(query: bytes) -> _Hot | None:
    """A list request that asks for nothing but ``skip`` and ``limit``, each once, in plain digits, the limit in its
    range; None: Litestar's to parse (filters, a cursor, anything unusual)."""
    given: dict[bytes, int] = {}
    for pair in query.split(b"&") if query else ():
        name, equals, value = pair.partition(b"=")
        if name not in {b"skip", b"limit"} or name in given or not equals or not value.isdigit() or len(value) > 18:
            return None
        given[name] = int(value)
    limit = given.get(b"limit", LIST_LIMIT_DEFAULT)
    if not 1 <= limit <= LIST_LIMIT_MAX:
        return None
    return _Hot("GET", skip=given.get(b"skip", 0), limit=limit)


def _route(scope: Scope) -> _Hot | None:
    """The request, when it is one this layer answers as Litestar would route it; None otherwise."""
    method = scope["method"]
    if method not in _OPT or scope.get("root_path"):
        return None
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    if host is not None and not is_valid_host(host):
        return None
    path: str = scope["path"]
    if path == LIST:
        return _page(scope["query_string"]) if method == "GET" else None
    if not path.startswith(PREFIX) or scope["query_string"]:
        return None
    credential_id = path[len(PREFIX) :]
    if not credential_id or "/" in credential_id or credential_id in _SIBLINGS:
        return None
    return _Hot(method, credential_id)


async def _body(connection: ASGIConnection[Any, Any, Any, Any], receive: Receive, limit: int) -> bytes:
    declared = connection.headers.get("content-length", "")
    if not (declared.isascii() and declared.isdigit()) or int(declared) > limit:
        raise _HandOver
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _HandOver(b"".join(chunks))
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive``, giving ``body`` first: the part of the request this layer already read."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _answer(send: Send, body: bytes, etag: str | None) -> None:
    """200 with ``body`` (``X-Request-Id`` is added by ``service.context.with_request_ids``, as to every answer)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if etag is not None:
        headers.append((b"etag", etag.encode()))
    start: Any = {"type": "http.response.start", "status": 200, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _handler_for(exc: Exception) -> Callable[[Request[Any, Any, Any], Any], Any]:
    """The handler ``service.errors`` maps this error to (``Exception`` maps every error)."""
    kind = next(kind for kind in type(exc).__mro__ if kind in EXCEPTION_HANDLERS)
    handler: Callable[[Request[Any, Any, Any], Any], Any] = EXCEPTION_HANDLERS[kind]
    return handler


async def _serve(app: Litestar, scope: Scope, receive: Receive, send: Send, hot: _Hot, max_body: int) -> None:
    connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope, receive, send)
    method, credential_id = hot.method, hot.credential_id
    if method == "PUT":
        if_match = connection.headers.get("if-match")
        if if_match is not None and len(if_match) > IF_MATCH_MAX:
            raise _HandOver
    ctx: RequestContext = await admit(scope, _OPT[method])
    service: CredentialService = app.state.services.credentials
    if credential_id is None:
        check_skip(hot.skip)
        page = await service.list(ctx, ListQuery(skip=hot.skip, limit=hot.limit))
        await _answer(send, _ENCODE(page), None)
        return
    if method == "GET":
        credential = await service.get(ctx, credential_id)
    elif method == "PUT":
        body = await _body(connection, receive, max_body)
        try:
            data = _UPDATE.decode(body)
        except msgspec.MsgspecError:
            raise _HandOver(body) from None
        credential = await service.update(ctx, credential_id, data, if_match)
    else:
        await service.delete(ctx, credential_id)
        await _answer(send, _ENCODE(CredentialDeleted(id=credential_id, deleted=True)), None)
        return
    await _answer(send, _ENCODE(credential.read()), credential.etag)


def hot_routes(app: Litestar, inner: ASGIApp) -> ASGIApp:
    """Wrap ``inner`` (the app's ASGI handler) with the fast answers for these routes."""
    max_body = app.state.settings.http.max_body_bytes

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        hot = _route(scope) if scope["type"] == "http" else None
        if hot is None:
            await inner(scope, receive, send)
            return
        if hot.credential_id is None:
            scope["path_template"] = LIST
        else:
            scope["path_template"] = TEMPLATE
            scope["path_params"] = {"credential_id": hot.credential_id}
        try:
            await _serve(app, scope, receive, send, hot, max_body)
        except _HandOver as handed:
            await inner(scope, receive if handed.body is None else _replaying(handed.body, receive), send)
        except Exception as exc:  # every error is answered by its handler, as Litestar does
            request: Request[Any, Any, Any] = Request(scope, receive, send)
            response = _handler_for(exc)(request, exc)
            await response.to_asgi_response(app=None, request=request, type_encoders=app.type_encoders)(
                scope, receive, send
            )

    return serve
