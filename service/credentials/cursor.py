"""Keyset pagination of the credential list: an opaque ``cursor`` naming the last row of the previous page.

Beside ``skip``/``limit`` (kept for Mielto's clients): a page after a cursor costs the same at any depth, where an
``OFFSET`` reads and drops every skipped row, and rows created meanwhile neither repeat nor go missing. The cursor
is the last row's ``(created_at, id)``, the list's order, as base64url JSON; it carries no secret and no other
workspace's data (it is applied inside the caller's workspace filter).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

import msgspec

from service.errors import RequestInvalid

_LOC: list[str | int] = ["query", "cursor"]


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    created_at: datetime
    id: uuid.UUID


def encode(created_at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(Cursor(created_at, row_id))).decode().rstrip("=")


def decode(cursor: str) -> Cursor:
    """The position a cursor names; 422 at ``["query", "cursor"]`` for anything this service did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise RequestInvalid.at(_LOC, "Input should be a cursor returned as next_cursor", "cursor") from None
