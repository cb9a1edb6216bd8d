"""``ANY /api/v1/proxy/{credential_id}/{path}``: call the credential's upstream with its secret injected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from litestar import Request, route
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Stream
from litestar.response.base import ASGIResponse

from service.auth.principal import Permission
from service.context import Ctx
from service.errors import BadGateway, GatewayTimeout, PayloadTooLarge
from service.openapi import SECURITY, errors, needs
from service.proxy import paths
from service.proxy.schemas import METHODS
from service.proxy.service import Call, Proxied, ProxyService

Proxy = NamedDependency[ProxyService]
PROXY_OPT = {**needs(Permission.use), "grant": "use"}
"""``grant``: the authentication guard also accepts a grant token here, for the credential it is bound to."""


SMALL_BODY = 64 * 1024
"""An answer that declares at most this many bytes is read whole and sent at once (no streaming machinery)."""


class Passthrough(Stream):
    """A stream that answers with the upstream's headers as it sent them: a repeated header (two ``Set-Cookie``, two
    ``Link``) keeps every value, in order, which a header mapping cannot hold. An upstream header replaces one of
    the same name that the response would otherwise carry (``Content-Type``). With ``whole`` (a small body already
    read), it is sent as one plain response: no task watching for the caller's disconnect, no chunk loop."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        upstream_headers: list[tuple[str, str]],
        whole: bytes | None = None,
        **kwargs: Any,
    ):
        super().__init__(content, **kwargs)
        self.upstream_headers = upstream_headers
        self.whole = whole

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        if self.whole is None:
            response = super().to_asgi_response(*args, **kwargs)
        else:
            response = ASGIResponse(
                background=self.background or kwargs.get("background"),
                body=self.whole,
                headers={**(kwargs.get("headers") or {}), **self.headers},
                is_head_response=bool(kwargs.get("is_head_response")),
                media_type=self.media_type,
                status_code=self.status_code,
            )
        for name in {name.lower() for name, _ in self.upstream_headers}:
            del response.headers[name]
        response.headers.headers.extend(
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.upstream_headers
        )
        return response


async def _small(proxied: Proxied, method: str) -> bytes | None:
    """The whole body, when the upstream declared a small one that may be sent at once; None: stream it."""
    declared = next((value for name, value in proxied.headers if name.lower() == "content-length"), None)
    if declared is None or not declared.isdigit() or int(declared) > SMALL_BODY:
        return None
    if method == "HEAD" or proxied.status < 200 or proxied.status in {204, 304}:
        return None
    try:
        return b"".join([chunk async for chunk in proxied.body])
    except TimeoutError:
        proxied.usage.outcome = "timeout"
        await proxied.usage.save()
        raise GatewayTimeout("The upstream's answer stalled") from None
    except aiohttp.ClientError as exc:
        proxied.usage.outcome = "unreachable"
        await proxied.usage.save()
        raise BadGateway(f"The upstream's answer broke off ({type(exc).__name__})") from None


def proxy_handler(max_request_bytes: int) -> HTTPRouteHandler:
    """The handler, with the request body bound of the settings (``CREDENTIALS_PROXY_MAX_REQUEST_BYTES``)."""

    async def proxy_call(
        request: Request[Any, Any, Any], credential_id: FromPath[str], path: FromPath[str], ctx: Ctx, proxy: Proxy
    ) -> Stream:
        """Addition: forward this request to the credential's `base_url` + path, with the secret injected (never
        returned), the caller's own credentials and hop-by-hop headers removed. Needs `use` (or a grant for this
        credential). Redirects are returned, not followed. 409 when the credential has no proxy settings; 400 for a
        path that could leave the allowed prefixes; 403 outside the allowed methods or prefixes; 413 for a body over
        the limit; 502 when the upstream cannot be reached or answers too much; 504 when it is too slow."""
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        raw_path = raw.decode("latin-1").split("?", 1)[0]
        upstream_path = paths.upstream_path(raw_path, f"/api/v1/proxy/{credential_id}")
        query = paths.check_query(request.scope.get("query_string", b"").decode("latin-1"))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
            raise PayloadTooLarge(f"The request body exceeds {max_request_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_request_bytes:
                raise PayloadTooLarge(f"The request body exceeds {max_request_bytes} bytes")
            chunks.append(chunk)
        call = Call(request.method, upstream_path, query, list(request.headers.items()), b"".join(chunks))
        proxied = await proxy.forward(ctx, credential_id, call)
        return Passthrough(
            proxied.body,
            whole=await _small(proxied, call.method),
            upstream_headers=proxied.headers,
            status_code=proxied.status,
            media_type="application/octet-stream",  # unless the upstream names its own
            background=BackgroundTask(proxied.usage.save),
        )

    return route(
        "/proxy/{credential_id:str}/{path:path}",
        http_method=list(METHODS),
        opt=PROXY_OPT,
        request_max_body_size=max_request_bytes + 1,
        summary="Proxy a call with a credential",
        tags=["Proxy"],
        security=SECURITY,
        include_in_schema=True,
        responses=errors(
            400,
            401,
            403,
            404,
            409,
            503,
            e413="The request body exceeds CREDENTIALS_PROXY_MAX_REQUEST_BYTES",
            e502="The upstream cannot be reached, is refused by the egress rules, or answered too much",
            e504="The upstream did not answer within CREDENTIALS_PROXY_TIMEOUT",
        ),
    )(proxy_call)
