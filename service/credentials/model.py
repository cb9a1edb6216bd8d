"""The credential: its typed record, its statuses and what each allows, who may see it, its ETag and read views.

Every rule about a credential's status is decided here, once:

- ``active``: usable. ``expired`` is computed, never stored: an ``active`` credential whose ``expires_at`` has
  passed (a refreshable one is refreshed on use instead).
- ``inactive`` (disabled) and ``error`` (its provider refused a refresh): not usable; still changeable, and
  ``enable`` (or, for ``error``, new ``credentials``) makes them ``active`` again.
- ``revoked``: terminal. Every version of the secret is destroyed; nothing can use or change it any more.

``credential_scope`` says who in a workspace may see and use it:

- ``workspace``: everyone in the workspace (each still needs the permission for the operation).
- ``user`` and ``workspace_member``: the credential belongs to its ``user_id`` (required). It is listed, read,
  revealed, changed and deleted only by that user and by callers holding ``admin``. Other API keys act for the
  workspace, not for a user: they see ``workspace`` credentials only. A caller may create (or re-scope) a
  credential only into a place it can still see.

Who may set or change the owner and the scope (``check_rescope``):

- ``user_id`` is set on create only; no PUT changes it. Naming another user than oneself needs ``admin`` for the
  user scopes. On a ``workspace`` credential ``user_id`` is kept as sent (Mielto's clients send it) and grants
  nothing.
- Taking a ``workspace`` credential private (PUT ``credential_scope: user`` or ``workspace_member``) takes it away
  from everyone else in the workspace: it needs ``admin``, whoever ``user_id`` names. Otherwise any writer could
  name a user on a shared credential, and that user could then take it.
- A private credential's owner (or an admin) may move it between the user scopes or share it (``workspace``).

The write protocol's ``State`` (pending, active, deleted, deleting) belongs to the table: see ``db.credentials``.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from db.credentials import CredentialFilter, State, StatusFilter
from service.auth.principal import Principal
from service.credentials.schemas import AuthType, CredentialMasked, CredentialRead, CredentialType
from service.credentials.secrets import REFRESHABLE
from service.errors import CREDENTIAL_NOT_FOUND, Conflict, Forbidden, NotFound, RequestInvalid
from service.proxy.schemas import ProxyView


def now() -> datetime:
    return datetime.now(UTC)


class Status(enum.StrEnum):
    """A credential's status as the API shows it."""

    active = "active"
    inactive = "inactive"
    expired = "expired"
    revoked = "revoked"
    error = "error"


class Action(enum.StrEnum):
    """What a caller asks of a credential, as far as its status is concerned."""

    use = "use"
    """Reveal it, or refresh its tokens."""
    change = "change"
    """Update it, restore a version, disable or enable it."""


_UNUSABLE = {
    Status.inactive: "The credential is disabled",
    Status.revoked: "The credential is revoked",
    Status.error: "The credential is in error",
}
_TRANSITIONS: dict[str, Status] = {"disable": Status.inactive, "enable": Status.active, "revoke": Status.revoked}


def parse_id(credential_id: str) -> uuid.UUID:
    """A credential id from a path; anything that is not one of ours is simply not found."""
    try:
        return uuid.UUID(credential_id)
    except ValueError:
        raise NotFound(CREDENTIAL_NOT_FOUND) from None


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    """One stored credential: what the API shows, plus where its secret lives in Vault (the ``credential`` row)."""

    id: uuid.UUID
    workspace_id: str
    label: str
    description: str | None
    auth_type: AuthType
    credential_type: CredentialType | None
    credential_scope: str
    provider: str
    user_id: str | None
    created_by: str
    status: Status
    """The stored status: never ``expired``, which ``status_at`` computes."""
    status_reason: str | None
    status_changed_at: datetime | None
    status_changed_by: str | None
    expires_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    state: State
    kv_version: int
    """The KV v2 version of the secret the API serves (0: none yet)."""
    proxy: str | None = None
    """The proxy settings as stored (JSON; ``service.proxy.config``): None when the credential is not proxyable."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Credential:
        return msgspec.convert(row, cls)

    def row(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)

    def status_at(self, when: datetime | None = None) -> Status:
        if self.status is Status.active and self.expires_at is not None and self.expires_at <= (when or now()):
            return Status.expired
        return self.status

    @property
    def refreshable(self) -> bool:
        return self.auth_type in REFRESHABLE

    def due(self, margin: timedelta) -> bool:
        """Whether its access token expires within ``margin`` (a token without an expiry is never due)."""
        return self.expires_at is not None and self.expires_at <= now() + margin

    @property
    def etag(self) -> str:
        """Changes whenever the credential does: its KV version or its metadata (``updated_at``)."""
        stamp = f"{self.id}:{self.kv_version}:{self.updated_at.isoformat()}:{self.status}"
        return '"' + hashlib.sha256(stamp.encode()).hexdigest()[:32] + '"'

    def read(self) -> CredentialRead:
        """The API's view: metadata only, never the secret."""
        return CredentialRead(**self._read_fields())

    def masked(self, shown: dict[str, Any]) -> CredentialMasked:
        return CredentialMasked(**self._read_fields(), masked_credentials=shown)

    def _read_fields(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in _READ_FIELDS}
        values.update(id=str(self.id), status=self.status_at())
        if self.proxy is not None:
            values["proxy"] = msgspec.json.decode(self.proxy, type=ProxyView)
        return values

    # -- the status rules ------------------------------------------------------------------------------------------

    def check(self, action: Action) -> None:
        """409 when the stored status forbids ``action`` (``expired`` is the caller's concern: it may refresh)."""
        if action is Action.use and self.status in _UNUSABLE:
            message = _UNUSABLE[self.status]
            raise Conflict(f"{message}: {self.status_reason}" if self.status_reason else message)
        if action is Action.change and self.status is Status.revoked:
            raise Conflict("The credential is revoked and cannot be changed")

    def check_usable_now(self) -> None:
        """``check(use)``, and 409 when it has expired (for a credential that is not refreshed first)."""
        self.check(Action.use)
        if self.status_at() is Status.expired and self.expires_at is not None:
            raise Conflict(f"The credential expired at {self.expires_at.isoformat()}")

    def check_refreshable(self) -> None:
        if not self.refreshable:
            raise Conflict(f"Credentials of auth_type '{self.auth_type.value}' have no refresh token to refresh")
        self.check(Action.use)

    def status_change(self, action: str, reason: str | None, actor: str) -> dict[str, Any] | None:
        """The columns ``disable``, ``enable`` or ``revoke`` write; None when there is nothing to do (revoking a
        revoked credential)."""
        target = _TRANSITIONS[action]
        if self.status is Status.revoked and target is Status.revoked:
            return None
        self.check(Action.change)
        return status_columns(target, reason, actor)

    def error_columns(self, reason: str, actor: str) -> dict[str, Any]:
        """A refresh the provider refused: ``error``, until new credentials or an ``enable``."""
        return status_columns(Status.error, reason[:255], actor)

    def new_secret_columns(self, actor: str) -> dict[str, Any]:
        """New credentials end a refresh failure: refreshing is worth trying again."""
        return status_columns(Status.active, "credentials updated", actor) if self.status is Status.error else {}


def status_columns(target: Status, reason: str | None, actor: str) -> dict[str, Any]:
    """The columns every status change writes."""
    when = now()
    return {
        "status": target,
        "status_reason": reason,
        "status_changed_at": when,
        "status_changed_by": actor,
        "updated_at": when,
    }


_READ_FIELDS = tuple(
    name for name in CredentialRead.__struct_fields__ if name in Credential.__struct_fields__ and name != "proxy"
)


def status_filter(status: str, when: datetime) -> StatusFilter:
    """The rows whose computed status is ``status`` (a string the API passes on: an unknown one matches none)."""
    if status == Status.active:
        return StatusFilter(stored=Status.active, live_at=when)
    if status == Status.expired:
        return StatusFilter(stored=Status.active, expired_by=when)
    return StatusFilter(stored=status)


# -- scopes ------------------------------------------------------------------------------------------------------

WORKSPACE = "workspace"
USER_SCOPES = ("user", "workspace_member")
SCOPES = (WORKSPACE, *USER_SCOPES)


def visible_to(principal: Principal, **narrower: Any) -> CredentialFilter:
    """The credentials ``principal`` may see (its workspace, the scopes it may see), narrowed by ``narrower``."""
    if principal.grant is not None:
        # A grant sees exactly the credential it is bound to (whoever made it could see that one), nothing else.
        return CredentialFilter(
            workspace_id=principal.workspace_id, **{**narrower, "id": uuid.UUID(principal.grant.credential_id)}
        )
    if principal.sees_every_user:
        return CredentialFilter(workspace_id=principal.workspace_id, **narrower)
    if principal.is_user:
        return CredentialFilter(
            workspace_id=principal.workspace_id,
            shared_scopes=(WORKSPACE,),
            owned_scopes=USER_SCOPES,
            owner=principal.actor_id,
            **narrower,
        )
    return CredentialFilter(workspace_id=principal.workspace_id, shared_scopes=(WORKSPACE,), **narrower)


def owner_for_create(principal: Principal, scope: str, user_id: str | None) -> str | None:
    """The ``user_id`` a new credential gets: a user's own id by default for the user scopes. Checks the scope."""
    if scope in USER_SCOPES and user_id is None and principal.is_user:
        user_id = principal.actor_id
    check_scope(principal, scope, user_id)
    return user_id


def check_rescope(principal: Principal, current: str, scope: str, user_id: str | None) -> None:
    """The rules of ``check_scope`` for the new scope, and 403 for a non-admin taking a shared credential private."""
    check_scope(principal, scope, user_id)
    if current == WORKSPACE and scope in USER_SCOPES and not principal.sees_every_user:
        raise Forbidden("The 'admin' permission is needed to make a workspace credential private")


def check_scope(principal: Principal, scope: str, user_id: str | None) -> None:
    """422 for an unknown scope or a user scope without ``user_id``; 403 for a user credential the caller could
    not see afterwards."""
    if scope not in SCOPES:
        raise RequestInvalid.at(
            ["body", "credential_scope"], "Input should be 'workspace', 'user' or 'workspace_member'", "literal_error"
        )
    if scope not in USER_SCOPES:
        return
    if not user_id:
        raise RequestInvalid.at(
            ["body", "user_id"], f"user_id is required when credential_scope is '{scope}'", "missing"
        )
    if principal.sees_every_user or (principal.is_user and user_id == principal.actor_id):
        return
    raise Forbidden(f"The 'admin' permission is needed for a '{scope}' credential of another user")
