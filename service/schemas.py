"""The bases of every request and response body (msgspec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A date-time with its UTC offset (RFC 3339) in a request: a naive one is a 422 rather than a guess (or a 500 when
it is compared with the clock)."""

NO_NUL = r"^[^\x00]*$"
"""The pattern of every free-text string that reaches Postgres, which cannot store a NUL character (a 422 here
rather than a 500 from the database)."""


class Schema(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every request body; subclasses repeat ``kw_only=True`` because msgspec applies it per class.

    Unknown fields are refused with a 422 rather than ignored, so a typo in a field name (or an attempt to set
    ``workspace_id`` or ``status``) is reported to the client instead of silently dropped.
    """


class ReadSchema(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of responses: immutable once built (a separate base: msgspec cannot freeze a subclass of a mutable one)."""


class Page(ReadSchema, frozen=True, kw_only=True):
    """A page of a listing, paged as Mielto's API pages (``skip`` and ``limit``)."""

    total: int
    """Every match (for credentials: exact up to CREDENTIALS_LIST_EXACT_COUNT_LIMIT, the planner's estimate beyond)."""
    page: int
    """``skip // limit + 1``."""
    size: int
    """``limit``."""


def masked_repr(struct: msgspec.Struct) -> str:
    """A body's repr with its ``credentials`` replaced, so a stray log line or traceback shows ``'***'``."""
    parts = []
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        hidden = name == "credentials" and value is not None and value is not msgspec.UNSET
        parts.append(f"{name}={'***' if hidden else repr(value)}")
    return f"{type(struct).__name__}({', '.join(parts)})"
