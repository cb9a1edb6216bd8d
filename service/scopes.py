"""``credential_scope``: who in a workspace may see and use a credential.

- ``workspace``: everyone in the workspace (each still needs the permission for the operation).
- ``user`` and ``workspace_member``: the credential belongs to its ``user_id`` (required). It is listed, read,
  revealed, changed and deleted only by that user and by callers holding ``admin`` (workspace owners and admins,
  and API keys with the ``admin`` permission). Other API keys act for the workspace, not for a user: they see
  ``workspace`` credentials only.

A caller may create (or re-scope) a credential only into a place it can still see: a member for themselves, an
owner, admin or ``admin`` key for anyone; an API key without ``admin`` cannot hold user credentials.
"""

from __future__ import annotations

from db.queries import Where
from service.auth import Principal
from service.errors import Forbidden, RequestInvalid

WORKSPACE = "workspace"
USER_SCOPES = ("user", "workspace_member")
SCOPES = (WORKSPACE, *USER_SCOPES)
ALLOWED = "Input should be 'workspace', 'user' or 'workspace_member'"


def scope_condition(principal: Principal, where: Where) -> Where:
    """Narrow ``where`` to the scopes and owners ``principal`` may see."""
    if principal.sees_every_user:
        return where
    if principal.is_user:
        return where.add(
            "credential_scope = 'workspace' OR (credential_scope IN ('user', 'workspace_member') AND user_id = {})",
            principal.actor_id,
        )
    return where.add("credential_scope = 'workspace'")


def owner_for_create(principal: Principal, scope: str, user_id: str | None) -> str | None:
    """The ``user_id`` a new credential gets: a user's own id by default for the user scopes. Checks the scope."""
    if scope in USER_SCOPES and user_id is None and principal.is_user:
        user_id = principal.actor_id
    check_scope(principal, scope, user_id)
    return user_id


def check_scope(principal: Principal, scope: str, user_id: str | None) -> None:
    """422 for an unknown scope or a user scope without ``user_id``; 403 for a user credential the caller could
    not see afterwards."""
    if scope not in SCOPES:
        raise RequestInvalid.at(["body", "credential_scope"], ALLOWED, "literal_error")
    if scope not in USER_SCOPES:
        return
    if not user_id:
        raise RequestInvalid.at(
            ["body", "user_id"], f"user_id is required when credential_scope is '{scope}'", "missing"
        )
    if principal.sees_every_user or (principal.is_user and user_id == principal.actor_id):
        return
    raise Forbidden(f"The 'admin' permission is needed for a '{scope}' credential of another user")
