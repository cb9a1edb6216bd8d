"""Log lines that say which request they belong to: every record gets ``request_id``, ``actor`` and ``workspace``
(None outside a request), in text or in JSON (``CREDENTIALS_LOG_FORMAT``), access lines included.

The request is found through a context variable set by the telemetry middleware for the request's task; the
principal is the ``RequestContext`` the authentication guard puts in the request's state. The filter runs where
the record is made (before Litestar's queue hands it to another thread), so the context is the request's.
"""

from __future__ import annotations

import contextvars
import copy
import logging
from typing import Any

from litestar.logging import LoggingConfig
from litestar.logging.config import default_handlers
from pythonjsonlogger.msgspec import MsgspecFormatter

from service.context import request_id

current_scope: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("http_scope", default=None)
"""The ASGI scope of the request this task serves."""

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(actor)s %(workspace)s"
TEXT_FORMAT = "%(levelname)s - %(asctime)s - %(name)s - [%(request_id)s %(actor)s %(workspace)s] %(message)s"


class RequestFields(logging.Filter):
    """Adds ``request_id``, ``actor`` and ``workspace`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = current_scope.get()
        state = scope.get("state") if scope is not None else None
        context = state.get("context") if state else None
        record.request_id = (state.get("request_id") if state else None) or request_id.get()
        record.actor = context.actor_id if context is not None else None
        record.workspace = context.workspace_id if context is not None else None
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message
        return True


def logging_config(level: str, fmt: str) -> LoggingConfig:
    """Litestar's logging config for ``CREDENTIALS_LOG_LEVEL`` and ``CREDENTIALS_LOG_FORMAT``."""
    handlers = copy.deepcopy(default_handlers)
    for handler in handlers.values():
        handler["filters"] = ["request"]
    formatter: dict[str, Any] = (
        {
            "()": MsgspecFormatter,
            "fmt": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        }
        if fmt == "json"
        else {"format": TEXT_FORMAT}
    )
    return LoggingConfig(
        root={"level": level, "handlers": ["queue_listener"]},
        formatters={"standard": formatter},
        filters={"request": {"()": RequestFields}},
        handlers=handlers,
        # httpx logs every request's URL at INFO: a proxied URL can carry a secret in its query (injection by query
        # parameter), so only its warnings are kept.
        loggers={
            "litestar": {"level": "INFO", "handlers": ["queue_listener"], "propagate": False},
            "httpx": {"level": "WARNING"},
        },
        log_exceptions="never",
    )
