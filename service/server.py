"""The HTTP server ``credctl serve`` and ``credctl dev`` run: uvicorn with limits it lacks on its own.

uvicorn's default parser (httptools) buffers a header of any size, and nothing closes a connection whose headers
never finish: one unauthenticated client could hold gigabytes or every connection slot. ``LimitedHttpProtocol``
adds, per connection (``HardeningSettings``):

- request line and headers above ``CREDENTIALS_HTTP_MAX_HEADER_BYTES``: 431, connection closed;
- headers not complete ``CREDENTIALS_HTTP_HEADER_TIMEOUT`` seconds after the connection opened or its next request
  began: 408, connection closed;
- more than ``CREDENTIALS_HTTP_MAX_CONNECTIONS`` open connections: the new one gets 503 and is closed (uvicorn's
  ``limit_concurrency``, set to the same number, answers 503 to requests beyond it).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import uvicorn.config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import HardeningSettings, Settings


def _response(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class LimitedHttpProtocol(HttpToolsProtocol):
    """httptools' protocol with a bound on header bytes, a deadline for headers, and a connection cap."""

    limits: ClassVar[HardeningSettings | None] = None
    """Set by ``server_config``; a worker process started by uvicorn reads them from the environment instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if LimitedHttpProtocol.limits is None:
            LimitedHttpProtocol.limits = HardeningSettings.from_env()
        self._limits = LimitedHttpProtocol.limits
        self._in_headers = True
        self._header_bytes = 0
        """Bytes received while the headers were incomplete (catches a header that never ends)."""
        self._parsed_bytes = 0
        """Bytes of the request line and headers as parsed (catches headers that arrive complete in one chunk)."""
        self._refused = False
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            self._refuse(b"503 Service Unavailable")
            return
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # Checked after parsing: a chunk holding complete headers and the start of the body is fine.
        too_long = self._in_headers and self._header_bytes > self._limits.max_header_bytes
        if self._refused or too_long:
            self._refuse(b"431 Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_bytes = 0
        if not self._in_headers:  # the next request on a kept-alive connection
            self._in_headers, self._header_bytes = True, 0
            self._start_deadline()

    def on_url(self, url: bytes) -> None:
        self._parsed_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_deadline()
        if self._parsed_bytes > self._limits.max_header_bytes:
            self._refused = True  # answered by data_received once the parser returns; the app never sees it
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _start_deadline(self) -> None:
        self._cancel_deadline()
        self._header_deadline = self.loop.call_later(self._limits.header_timeout_seconds, self._headers_too_slow)

    def _cancel_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._in_headers and not self.transport.is_closing():
            self._refuse(b"408 Request Timeout")

    def _refuse(self, status: bytes) -> None:
        self._in_headers, self._refused = False, True
        self._cancel_deadline()
        self.transport.write(_response(status))
        self.transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """The ``uvicorn.run``/``uvicorn.Config`` options of ``credctl serve`` and ``credctl dev``: the hardening
    limits, and the logging. The app writes its own access lines (with the request id, actor and workspace), so
    uvicorn writes none; in JSON mode uvicorn's own lines go through the app's logging too, so every line is JSON."""
    limits = settings.hardening
    LimitedHttpProtocol.limits = limits
    return {
        "http": LimitedHttpProtocol,
        "limit_concurrency": limits.max_connections,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "log_level": "info",
        "access_log": False,
        "log_config": None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    }
