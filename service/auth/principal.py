"""The caller of one request, what each permission allows, and what each workspace role grants."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from service.errors import Forbidden
from service.grants.scope import GrantScope


class Permission(enum.StrEnum):
    """What a caller may do in its workspace."""

    read = "read"
    """List and get credentials."""
    write = "write"
    """Create, update and delete credentials."""
    reveal = "reveal"
    """Decrypt a credential's secret."""
    admin = "admin"
    """Manage the workspace's API keys, and see every user's ``user``/``workspace_member`` credentials."""
    use = "use"
    """Call a third party through the credential proxy (the secret is injected, never shown) and hand out grants.
    An API key may hold it without ``reveal``."""


class Role(enum.StrEnum):
    """A user's role in a workspace (from the user token's workspaces claim)."""

    owner = "owner"
    admin = "admin"
    member = "member"
    viewer = "viewer"


ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.owner: frozenset(Permission),
    Role.admin: frozenset(Permission),
    Role.member: frozenset({Permission.read, Permission.write, Permission.reveal, Permission.use}),
    Role.viewer: frozenset({Permission.read}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: the workspace it acts in, its id (``created_by``) and what it may do.

    ``actor_id`` is the API key's id, the user's ``sub``, or the name of a maintenance job.
    """

    workspace_id: str
    actor_id: str
    permissions: frozenset[Permission]
    kind: Literal["api_key", "user", "system", "grant"] = "api_key"
    role: Role | None = None
    """The user's role in the workspace; None for an API key."""
    provider: str = "api_key"
    """``api_key``, ``jwt``, or ``supabase`` for a token sent with Mielto's ``supabase_`` prefix."""
    label: str | None = None
    email: str | None = None
    name: str | None = None
    grant: GrantScope | None = None
    """For a grant token: the one credential it is bound to and what it narrows (``service.grants``)."""

    @classmethod
    def system(cls, actor: str, workspace_id: str) -> Principal:
        """A maintenance job acting in ``workspace_id`` (purge, proactive refresh): no permission of its own."""
        return cls(workspace_id=workspace_id, actor_id=actor, permissions=frozenset(), kind="system")

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    @property
    def sees_every_user(self) -> bool:
        """Whether it sees (and may act on) every user's ``user``/``workspace_member`` credentials: admins, and the
        service's own maintenance jobs (the proactive refresh must reach every due credential, whatever its scope;
        a job has no permission to use through the API)."""
        return Permission.admin in self.permissions or self.kind == "system"

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            if self.is_user:
                raise Forbidden(f"The '{self.role}' role lacks the '{permission}' permission")
            raise Forbidden(f"This API key lacks the '{permission}' permission")
