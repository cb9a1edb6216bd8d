"""The bodies of ``/api/v1/credentials`` (msgspec): the limits, enums and defaults of Mielto's published schemas."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

import msgspec

from service.proxy.schemas import ProxyConfig, ProxyView
from service.schemas import NO_NUL, AwareDatetime, Page, ReadSchema, Schema, masked_repr


class AuthType(enum.StrEnum):
    """How the stored secret authenticates against the third party."""

    api_key = "api_key"
    oauth_token = "oauth_token"
    oauth_token_refresh = "oauth_token_refresh"
    oauth_token_refresh_rotation = "oauth_token_refresh_rotation"
    basic_auth = "basic_auth"
    access_token = "access_token"
    access_token_refresh = "access_token_refresh"
    public_key_secret = "public_key_secret"
    connection_string = "connection_string"
    custom = "custom"


class CredentialType(enum.StrEnum):
    """The credential's category."""

    integration = "integration"
    llm = "llm"
    storage = "storage"
    vector_store = "vector_store"
    auth_provider = "auth_provider"
    custom = "custom"


Label = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        pattern=NO_NUL,
        max_length=100,
        title="Label",
        description="Human-readable label for the credential",
        examples=["Stripe production"],
    ),
]
Description = Annotated[
    str,
    msgspec.Meta(
        pattern=NO_NUL, max_length=255, description="Optional description of the credential", examples=["Billing"]
    ),
]
Scope = Annotated[
    str,
    msgspec.Meta(
        pattern=NO_NUL,
        max_length=255,
        title="Credential Scope",
        description="Who is the credential for (workspace, user, workspace_member)",
        examples=["workspace"],
    ),
]
Provider = Annotated[
    str, msgspec.Meta(pattern=NO_NUL, max_length=255, description="Provider of the credential", examples=["stripe"])
]
UserId = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=255, description="User ID of the credential")]
SecretData = Annotated[
    dict[str, Any],
    msgspec.Meta(
        title="Credentials",
        description="Raw credential data to be encrypted. Stored only in Vault, never returned by read operations.",
        examples=[{"api_key": "<your key>"}],
    ),
]


class CredentialCreate(Schema, kw_only=True):
    """Schema for creating a new credential."""

    def __repr__(self) -> str:
        return masked_repr(self)

    label: Label
    auth_type: AuthType
    credential_scope: Scope
    description: Description | None = None
    credentials: SecretData
    credential_type: CredentialType | None = None
    provider: Provider | None = "custom"
    user_id: UserId | None = None
    expires_at: AwareDatetime | None = None
    """Addition: when the credential expires, with its UTC offset (also taken from ``credentials.expires_at`` where
    the type has one)."""
    proxy: ProxyConfig | None = None
    """Addition: proxy settings, to use the credential through ``/api/v1/proxy/{id}/...`` without revealing it."""


class CredentialUpdate(Schema, kw_only=True):
    """Schema for updating an existing credential. Only the fields sent are changed; null leaves a field as is."""

    def __repr__(self) -> str:
        return masked_repr(self)

    label: Label | msgspec.UnsetType | None = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    credential_scope: Scope | msgspec.UnsetType | None = msgspec.UNSET
    credentials: SecretData | msgspec.UnsetType | None = msgspec.UNSET
    expires_at: AwareDatetime | msgspec.UnsetType | None = msgspec.UNSET
    """Addition: a new expiry, with its UTC offset (null leaves it as is)."""
    proxy: ProxyConfig | msgspec.UnsetType | None = msgspec.UNSET
    """Addition: new proxy settings, replacing the old ones (null leaves them as they are)."""


class CredentialRead(ReadSchema, frozen=True, kw_only=True):
    """Schema for reading credential data (without sensitive info)."""

    label: Label
    description: Description | None = None
    auth_type: AuthType
    credential_type: CredentialType | None = None
    credential_scope: Scope
    provider: str
    user_id: UserId | None = None
    id: str
    workspace_id: str
    """The caller's workspace when it was created: never taken from the body."""
    created_by: str
    """The API key's id or the user's ``sub`` that created it."""
    status: str
    """``active``, ``inactive``, ``expired`` (computed from ``expires_at``), ``revoked`` or ``error``."""
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    status_reason: str | None = None
    """Addition: why the status last changed (disable, enable, revoke, refresh failure)."""
    status_changed_at: datetime | None = None
    """Addition: when the status last changed."""
    proxy: ProxyView | msgspec.UnsetType = msgspec.UNSET
    """Addition: the proxy settings and the last provider check; absent when the credential is not proxyable."""


class CredentialMasked(CredentialRead, frozen=True, kw_only=True):
    """``GET /credentials/{id}?include=masked``: the metadata plus the secret with all but 4 characters masked."""

    masked_credentials: dict[str, Any]


class StatusChange(Schema, kw_only=True):
    """Body of disable, enable and revoke (optional)."""

    reason: (
        Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=255, description="Why; recorded as status_reason")]
        | None
    ) = None


class CredentialVersionRead(ReadSchema, frozen=True, kw_only=True):
    version: int
    created_at: datetime
    created_by: str
    reason: str
    restored_from: int | None = None
    current: bool
    destroyed: bool


class CredentialVersionList(Page, frozen=True, kw_only=True):
    """A page of a credential's versions, newest first (``skip`` and ``limit``, as the list pages)."""

    versions: list[CredentialVersionRead]


class CredentialList(Page, frozen=True, kw_only=True, omit_defaults=True):
    """Schema for listing credentials. ``next_cursor`` is left out when null, so Mielto's clients see the body they
    know on the last page (and whenever they page with skip/limit to its end)."""

    credentials: list[CredentialRead]
    next_cursor: str | None = None
    """Addition: pass as ``cursor`` for the page after this one (keyset pagination); absent on the last page."""


class CredentialDeleted(ReadSchema, frozen=True, kw_only=True):
    """The answer to a delete: the credential is gone and its secret destroyed in Vault."""

    id: str
    deleted: bool


class CredentialSecret(ReadSchema, frozen=True, kw_only=True):
    """The decrypted secret of one credential (``POST /credentials/{id}/reveal``)."""

    def __repr__(self) -> str:
        return masked_repr(self)

    id: str
    version: int
    auth_type: AuthType
    credentials: dict[str, Any]
