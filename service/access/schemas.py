"""Bodies of the access endpoints: API keys (``/api/v1/api-keys``) and the session (``/api/v1/auth/session``)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import msgspec

from service.auth.principal import Permission
from service.schemas import NO_NUL, AwareDatetime, Page, ReadSchema, Schema


class ApiKeyStatus(enum.StrEnum):
    active = "active"
    inactive = "inactive"


KeyLabel = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=255, pattern=NO_NUL, description="Human-readable label of the key", examples=["ci"]
    ),
]
Permissions = Annotated[
    list[Permission],
    msgspec.Meta(min_length=1, max_length=4, description="What the key may do", examples=[["read", "write"]]),
]
ExpiresAt = Annotated[
    AwareDatetime, msgspec.Meta(description="When the key stops working (ISO 8601 with a UTC offset)")
]


class ApiKeyCreate(Schema, kw_only=True):
    """Schema for creating a workspace API key. The caller may grant only permissions it holds itself."""

    label: KeyLabel
    permissions: Permissions = msgspec.field(default_factory=lambda: [Permission.read])
    status: ApiKeyStatus = ApiKeyStatus.active
    expires_at: ExpiresAt | None = None


class ApiKeyRead(ReadSchema, frozen=True, kw_only=True):
    """A workspace API key as listed: never its secret."""

    id: str
    key: str
    """The public prefix of the key (``ck_<lookup>``): identifies it, cannot be used to call the API."""
    label: str | None
    status: str
    permissions: list[str]
    expires_at: datetime | None
    workspace_id: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class ApiKeyCreated(ApiKeyRead, frozen=True, kw_only=True):
    """The answer to a create: the key's record plus ``secret``, the whole key, shown this once and never again."""

    secret: str
    """The API key to send as ``Authorization: Bearer <secret>`` or ``X-API-Key: <secret>``."""


class ApiKeyList(Page, frozen=True, kw_only=True):
    """The workspace's keys that are not revoked, newest first."""

    api_keys: list[ApiKeyRead]


class SessionUser(ReadSchema, frozen=True, kw_only=True):
    """The signed-in user (from the token's ``sub``, ``email`` and name claims)."""

    id: str
    email: str | None = None
    name: str | None = None


class SessionWorkspace(ReadSchema, frozen=True, kw_only=True):
    id: str


class SessionWorkspaceUser(ReadSchema, frozen=True, kw_only=True):
    """The caller's standing in the workspace. ``role`` is null for an API key."""

    role: str | None
    is_owner: bool
    permissions: list[str]
    status: str


class SessionApiKey(ReadSchema, frozen=True, kw_only=True):
    id: str
    label: str | None


class Session(ReadSchema, frozen=True, kw_only=True):
    """Who is calling, in which workspace, with what rights (Mielto's ``/auth/session`` shape, plus ``api_key``)."""

    user: SessionUser | None
    workspace: SessionWorkspace
    workspace_user: SessionWorkspaceUser
    auth_type: str
    """``bearer_token`` for a user token, ``api_key`` for an API key."""
    auth_provider: str
    """``supabase`` for a ``supabase_``-prefixed token, ``jwt`` for another user token, ``api_key`` for a key."""
    api_key: SessionApiKey | None = None
