"""The request context: which API request is being served, and for whom.

``X-Request-Id`` is taken from the client when it is sane, generated otherwise, and returned on every response.
The authentication guard adds the principal. Handlers receive the context as their ``ctx`` dependency and hand it
to the services; every Vault call made for the request carries it (``RequestContext.vault``) in audited headers, so
one API call can be followed into Vault's audit log. It is also kept in a context variable, for code that serves
the request without being handed it (log records).
"""

from __future__ import annotations

import contextvars
import os
import re
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.auth.principal import Principal
from vault.store import CallContext

HEADER = "x-request-id"
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


def assign_request_id(scope: Scope) -> str:
    """The request's id: the client's ``X-Request-Id`` when sane, a new one otherwise; kept in the scope's state, so
    that a request handed on (``service.hot_routes`` to Litestar) keeps the id it was given."""
    state = scope.setdefault("state", {})
    rid: str | None = state.get("request_id")
    if rid is None:
        sent = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"x-request-id"), "")
        rid = state["request_id"] = sent if _SANE.match(sent) else os.urandom(16).hex()  # uuid4().hex's form
    return rid


def send_with_id(send: Send, rid: str) -> Send:
    """``send``, with ``X-Request-Id`` added to the response's headers."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableScopeHeaders.from_message(message)[HEADER] = rid
        await send(message)

    return sending


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        rid = assign_request_id(scope)
        token = request_id.set(rid)
        try:
            await app(scope, receive, send_with_id(send, rid))
        finally:
            request_id.reset(token)

    return middleware


Ctx = NamedDependency[RequestContext]
"""How a handler (or a service provider) asks for the request context: ``ctx: Ctx``."""


def provide_context(request: Request[Any, Any, Any]) -> RequestContext:
    """The ``ctx`` dependency: set by the authentication guard, which runs before any handler."""
    context: RequestContext = request.state.context
    return context
