"""The credential model without a server: the status rules, the scope rules, the ETag, and that the typed record
is exactly the table's row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from db.credentials import COLUMNS, CredentialFilter, State, StatusFilter
from service.auth.principal import ROLE_PERMISSIONS, Permission, Principal, Role
from service.credentials import model
from service.credentials.model import Action, Credential, Status
from service.credentials.schemas import AuthType
from service.errors import Conflict, Forbidden, RequestInvalid

NOW = datetime.now(UTC)
KEY = Principal(workspace_id="wsp", actor_id="key-1", permissions=frozenset({Permission.read, Permission.write}))
ADMIN_KEY = Principal(workspace_id="wsp", actor_id="key-2", permissions=frozenset(Permission))
MEMBER = Principal(
    workspace_id="wsp", actor_id="usr_1", permissions=ROLE_PERMISSIONS[Role.member], kind="user", role=Role.member
)


def credential(**changes: Any) -> Credential:
    row: dict[str, Any] = {
        "id": uuid.uuid4(), "workspace_id": "wsp", "label": "l", "description": None, "auth_type": "api_key",
        "credential_type": None, "credential_scope": "workspace", "provider": "custom", "user_id": None,
        "created_by": "key-1", "status": "active", "status_reason": None, "status_changed_at": None,
        "status_changed_by": None, "expires_at": None, "last_used_at": None, "created_at": NOW, "updated_at": NOW,
        "deleted_at": None, "state": "active", "kv_version": 1,
    }  # fmt: skip
    row.update(changes)
    return Credential.from_row(row)


def test_the_record_is_exactly_the_tables_row() -> None:
    assert set(Credential.__struct_fields__) == set(COLUMNS)
    assert credential().row()["state"] is State.active


def test_a_row_with_an_unknown_status_is_refused_rather_than_served() -> None:
    with pytest.raises(msgspec.ValidationError, match="status"):
        credential(status="paused")


def test_expired_is_computed_from_expires_at_and_never_stored() -> None:
    past, future = NOW - timedelta(seconds=1), NOW + timedelta(days=1)

    assert credential(expires_at=past).status_at() is Status.expired
    assert credential(expires_at=future).status_at() is Status.active
    assert credential(expires_at=past, status="inactive").status_at() is Status.inactive
    assert credential(expires_at=past).read().status == "expired"
    with pytest.raises(Conflict, match=r"^The credential expired at "):
        credential(expires_at=past).check_usable_now()


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        ("inactive", "leaked", "The credential is disabled: leaked"),
        ("inactive", None, "The credential is disabled"),
        ("revoked", "breach", "The credential is revoked: breach"),
        ("error", "invalid_grant", "The credential is in error: invalid_grant"),
    ],
)
def test_what_cannot_be_used_says_why(status: str, reason: str | None, message: str) -> None:
    with pytest.raises(Conflict) as refused:
        credential(status=status, status_reason=reason).check(Action.use)
    assert refused.value.detail == message


def test_only_a_revoked_credential_refuses_changes() -> None:
    for status in ("active", "inactive", "error"):
        credential(status=status).check(Action.change)
    with pytest.raises(Conflict, match=r"^The credential is revoked and cannot be changed$"):
        credential(status="revoked").check(Action.change)


def test_status_changes_write_who_when_and_why_and_revoke_is_terminal() -> None:
    disabled = credential().status_change("disable", "leaked", "key-1")
    assert disabled is not None
    assert (disabled["status"], disabled["status_reason"], disabled["status_changed_by"]) == (
        Status.inactive,
        "leaked",
        "key-1",
    )
    assert disabled["status_changed_at"] == disabled["updated_at"]
    assert credential(status="error").status_change("enable", None, "key-1") is not None
    assert credential(status="revoked").status_change("revoke", "again", "key-1") is None
    with pytest.raises(Conflict):
        credential(status="revoked").status_change("enable", None, "key-1")


def test_new_credentials_end_an_error_and_nothing_else() -> None:
    assert credential(status="error").new_secret_columns("key-1")["status"] is Status.active
    assert credential(status="inactive").new_secret_columns("key-1") == {}


def test_only_refreshable_types_refresh() -> None:
    with pytest.raises(Conflict, match=r"^Credentials of auth_type 'api_key' have no refresh token to refresh$"):
        credential().check_refreshable()
    credential(auth_type=AuthType.oauth_token_refresh).check_refreshable()


def test_the_list_filter_maps_computed_statuses_to_stored_ones() -> None:
    assert model.status_filter("active", NOW) == StatusFilter(stored="active", live_at=NOW)
    assert model.status_filter("expired", NOW) == StatusFilter(stored="active", expired_by=NOW)
    assert model.status_filter("revoked", NOW) == StatusFilter(stored="revoked")


def test_who_sees_which_scopes() -> None:
    assert model.visible_to(ADMIN_KEY) == CredentialFilter(workspace_id="wsp")
    assert model.visible_to(KEY) == CredentialFilter(workspace_id="wsp", shared_scopes=("workspace",))
    assert model.visible_to(MEMBER) == CredentialFilter(
        workspace_id="wsp", shared_scopes=("workspace",), owned_scopes=("user", "workspace_member"), owner="usr_1"
    )


def test_who_may_create_into_which_scope() -> None:
    assert model.owner_for_create(MEMBER, "user", None) == "usr_1"
    assert model.owner_for_create(ADMIN_KEY, "user", "usr_9") == "usr_9"
    assert model.owner_for_create(KEY, "workspace", None) is None
    with pytest.raises(Forbidden):
        model.owner_for_create(KEY, "user", "usr_9")
    with pytest.raises(Forbidden):
        model.owner_for_create(MEMBER, "workspace_member", "usr_2")
    with pytest.raises(RequestInvalid):
        model.owner_for_create(ADMIN_KEY, "user", None)
    with pytest.raises(RequestInvalid):
        model.owner_for_create(ADMIN_KEY, "team", None)


def test_the_etag_changes_with_the_version_the_metadata_and_the_status() -> None:
    base = credential()
    tags = {
        base.etag,
        msgspec.structs.replace(base, kv_version=2).etag,
        msgspec.structs.replace(base, updated_at=NOW + timedelta(microseconds=1)).etag,
        msgspec.structs.replace(base, status=Status.inactive).etag,
    }
    assert len(tags) == 4
    assert base.etag == credential(id=base.id).etag
