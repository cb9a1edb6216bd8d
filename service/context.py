"""The request context: which API request is being served, and for whom.

``X-Request-Id`` is taken from the client when it is sane, generated otherwise, and returned on every response.
The authentication guard adds the principal. Handlers receive the context as their ``ctx`` dependency and hand it
to the services; every Vault call made for the request carries it (``RequestContext.vault``) in audited headers, so
one API call can be followed into Vault's audit log. It is also kept in a context variable, for code that serves
the request without being handed it (log records).
"""

from __future__ import annotations

import contextvars
import random
import re
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.auth.principal import Principal
from vault.store import CallContext

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode()
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The id of the request this task serves (None outside a request)."""


@dataclass(frozen=True, slots=True)
class RequestContext:
    """One API request (or one maintenance job's work in a workspace): its id and its principal."""

    request_id: str
    principal: Principal

    @classmethod
    def job(cls, run_id: str, actor: str, workspace_id: str) -> RequestContext:
        """The context of a maintenance job (purge, proactive refresh) acting in ``workspace_id``."""
        return cls(request_id=run_id, principal=Principal.system(actor, workspace_id))

    @property
    def workspace_id(self) -> str:
        return self.principal.workspace_id

    @property
    def actor_id(self) -> str:
        return self.principal.actor_id

    def vault(self) -> CallContext:
        """The audited headers of every Vault call made for this request."""
        return CallContext(request_id=self.request_id, actor=self.actor_id, workspace=self.workspace_id)


def _assign(scope: Scope) -> str:
    """The client's ``X-Request-Id`` when sane, a new id otherwise, kept in the scope's state (where log records
    find it, ``service.telemetry.logs``)."""
    sent = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"x-request-id"), "")
    # uuid4().hex's form. From the process's PRNG, not os.urandom (a system call per request): an id names a
    # request, it guards nothing (a client may choose its own), and 128 random bits do not collide.
    rid = sent if _SANE.match(sent) else f"{random.getrandbits(128):032x}"
    scope.setdefault("state", {})["request_id"] = rid
    return rid


def with_request_ids(app: ASGIApp) -> ASGIApp:
    """Every HTTP request gets its id here, once, before anything else serves it (the hot routes, Litestar's router,
    its own 404 and 405): in the scope's state, in the ``request_id`` context variable while it is served, and in
    the response's ``X-Request-Id`` (replacing one a proxied upstream sent)."""

    async def layer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        rid = _assign(scope)
        header = (_HEADER_BYTES, rid.encode("latin-1"))

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                message["headers"] = [pair for pair in headers if pair[0].lower() != _HEADER_BYTES] + [header]
            await send(message)

        token = request_id.set(rid)
        try:
            await app(scope, receive, sending)
        finally:
            request_id.reset(token)

    return layer


Ctx = NamedDependency[RequestContext]
"""How a handler (or a service provider) asks for the request context: ``ctx: Ctx``."""


def provide_context(request: Request[Any, Any, Any]) -> RequestContext:
    """The ``ctx`` dependency: set by the authentication guard, which runs before any handler."""
    context: RequestContext = request.state.context
    return context
