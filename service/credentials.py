"""The credential data path: metadata in Postgres, secrets in Vault, and no half-done state visible.

A row is written first in state ``pending`` (invisible to the API), then the secret goes to Vault, then the row
becomes ``active`` with the KV version it serves. Any failure undoes what was done; a crash in between leaves
a ``pending`` row or an unreferenced KV entry that ``credctl reconcile`` repairs. Reads serve exactly the KV
version the row names, so a KV write that Postgres never recorded is never shown.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from piccolo.custom_types import Combinable
from piccolo.query.methods.select import Select

from db.tables import Credential
from service.auth import Principal
from service.errors import CREDENTIAL_NOT_FOUND, NotFound, RequestInvalid
from service.schemas import (
    AuthType,
    CredentialCreate,
    CredentialList,
    CredentialRead,
    CredentialSecret,
    CredentialType,
    CredentialUpdate,
)
from service.scopes import check_scope, owner_for_create, visible_scopes
from vault.errors import VersionConflict
from vault.store import CallContext, SecretStore

log = logging.getLogger("service.credentials")

MAX_SECRET_BYTES = 64 * 1024
"""The encoded ``credentials`` object may not exceed this (Vault's own request limits are far above it)."""

READ_FIELDS = tuple(CredentialRead.__struct_fields__)
_COLUMNS = [getattr(Credential, name) for name in READ_FIELDS]


@dataclass(frozen=True, slots=True)
class ListQuery:
    skip: int = 0
    limit: int = 100
    credential_type: CredentialType | None = None
    auth_type: AuthType | None = None
    status: str | None = None
    search: str | None = None


def encode_secret(credentials: dict[str, Any]) -> bytes:
    """The bytes Vault encrypts. Refuses an empty or oversized object with a 422 that names the field."""
    if not credentials:
        raise RequestInvalid.at(["body", "credentials"], "credentials must not be empty", "value_error")
    plaintext = msgspec.json.encode(credentials)
    if len(plaintext) > MAX_SECRET_BYTES:
        raise RequestInvalid.at(
            ["body", "credentials"],
            f"credentials must be at most {MAX_SECRET_BYTES} bytes as JSON, got {len(plaintext)}",
            "too_long",
        )
    return plaintext


def to_read(row: dict[str, Any]) -> CredentialRead:
    values = {name: row[name] for name in READ_FIELDS}
    values["id"] = str(row["id"])
    values["auth_type"] = AuthType(row["auth_type"])
    if row["credential_type"] is not None:
        values["credential_type"] = CredentialType(row["credential_type"])
    return CredentialRead(**values)


def parse_id(credential_id: str) -> uuid.UUID:
    """A credential id from a path; anything that is not one of ours is simply not found."""
    try:
        return uuid.UUID(credential_id)
    except ValueError:
        raise NotFound(CREDENTIAL_NOT_FOUND) from None


def _visible(principal: Principal) -> Combinable:
    """What ``principal`` may see: its workspace's finished rows, within the scopes it may see (service.scopes)."""
    where: Combinable = (Credential.workspace_id == principal.workspace_id) & (Credential.state == "active")
    scopes = visible_scopes(principal)
    return where if scopes is None else where & scopes


def _now() -> datetime:
    return datetime.now(UTC)


class CredentialService:
    """The operations behind the ``/credentials`` endpoints, for one principal at a time."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store

    async def create(self, principal: Principal, request_id: str, data: CredentialCreate) -> CredentialRead:
        plaintext = encode_secret(data.credentials)
        user_id = owner_for_create(principal, data.credential_scope, data.user_id)
        credential_id = uuid.uuid4()
        now = _now()
        row = Credential(
            id=credential_id,
            workspace_id=principal.workspace_id,
            label=data.label,
            description=data.description,
            auth_type=data.auth_type.value,
            credential_type=data.credential_type.value if data.credential_type else None,
            credential_scope=data.credential_scope,
            provider=data.provider if data.provider is not None else "custom",
            user_id=user_id,
            created_by=principal.actor_id,
            status="active",
            created_at=now,
            updated_at=now,
            state="pending",
            kv_version=0,
        )
        await Credential.insert(row)
        ctx = CallContext(request_id=request_id, actor=principal.actor_id, workspace=principal.workspace_id)
        try:
            stored = await self.store.create(
                ctx,
                str(credential_id),
                plaintext,
                custom_metadata={
                    "workspace_id": principal.workspace_id,
                    "credential_id": str(credential_id),
                    "created_by": principal.actor_id,
                    "auth_type": data.auth_type.value,
                    "request_id": request_id,
                },
            )
            await Credential.update({Credential.state: "active", Credential.kv_version: stored.version}).where(
                Credential.id == credential_id
            )
        except BaseException:
            await self._undo_create(ctx, credential_id)
            raise
        return to_read({**row.to_dict(), "state": "active"})

    async def _undo_create(self, ctx: CallContext, credential_id: uuid.UUID) -> None:
        """Best effort, each step on its own: what cannot be undone now, ``credctl reconcile`` finishes later
        (a ``pending`` row, or a KV entry without a row)."""
        try:
            await self.store.destroy(ctx, ctx.workspace, str(credential_id))
        except Exception as exc:
            log.warning("create %s: secret not destroyed (%s); reconcile will", credential_id, type(exc).__name__)
        try:
            await Credential.delete().where(Credential.id == credential_id)
        except Exception as exc:
            log.warning("create %s: pending row not removed (%s); reconcile will", credential_id, type(exc).__name__)

    async def get(self, principal: Principal, credential_id: str) -> CredentialRead:
        row = await self._select(principal).where(Credential.id == parse_id(credential_id)).first()
        if row is None:
            raise NotFound(CREDENTIAL_NOT_FOUND)
        return to_read(row)

    async def list(self, principal: Principal, query: ListQuery) -> CredentialList:
        where: Combinable = _visible(principal)
        if query.credential_type is not None:
            where &= Credential.credential_type == query.credential_type.value
        if query.auth_type is not None:
            where &= Credential.auth_type == query.auth_type.value
        if query.status is not None:
            where &= Credential.status == query.status
        if query.search:
            pattern = "%" + query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where &= Credential.label.ilike(pattern) | Credential.description.ilike(pattern)
        rows = await (
            Credential.select(*_COLUMNS)
            .where(where)
            .order_by(Credential.created_at, Credential.id, ascending=False)
            .offset(query.skip)
            .limit(query.limit)
        )
        total = await Credential.count().where(where)
        return CredentialList(
            credentials=[to_read(row) for row in rows],
            total=total,
            page=query.skip // query.limit + 1,
            size=query.limit,
        )

    async def update(
        self, principal: Principal, request_id: str, credential_id: str, data: CredentialUpdate
    ) -> CredentialRead:
        cid = parse_id(credential_id)
        changes: dict[Any, Any] = {}
        for name in ("label", "description", "credential_scope"):
            value = getattr(data, name)
            # Mielto's PUT is a partial update: unset or null leaves the field as it is.
            if value is not msgspec.UNSET and value is not None:
                changes[getattr(Credential, name)] = value
        new_secret = data.credentials not in (msgspec.UNSET, None)
        plaintext = encode_secret(data.credentials) if new_secret else b""  # type: ignore[arg-type]

        async with Credential._meta.db.transaction():
            # The row lock serializes writers of one credential across every service instance.
            row = await self._select(principal, Credential.kv_version).where(Credential.id == cid).lock_rows().first()
            if row is None:
                raise NotFound(CREDENTIAL_NOT_FOUND)
            if isinstance(data.credential_scope, str):
                check_scope(principal, data.credential_scope, row["user_id"])
            if not changes and not new_secret:
                return to_read(row)
            ctx = CallContext(request_id=request_id, actor=principal.actor_id, workspace=principal.workspace_id)
            if new_secret:
                changes[Credential.kv_version] = await self._write_version(ctx, cid, plaintext, row["kv_version"])
            changes[Credential.updated_at] = _now()
            await Credential.update(changes).where(Credential.id == cid)
        row.update({column._meta.name: value for column, value in changes.items()})
        return to_read(row)

    async def _write_version(self, ctx: CallContext, cid: uuid.UUID, plaintext: bytes, known: int) -> int:
        """Write a new KV version on top of ``known``, the version Postgres serves.

        KV can be ahead of Postgres when an earlier update wrote Vault but failed to commit the row: those
        versions were never served. Holding the row lock, we destroy them and write on top of them.
        """
        try:
            return await self.store.update(ctx, str(cid), plaintext, expected_version=known)
        except VersionConflict:
            current = await self.store.current_version(ctx.workspace, str(cid))
            if current is None or current <= known:
                raise
            log.warning(
                "credential %s: KV at v%d, database at v%d; destroying the unserved versions", cid, current, known
            )
            await self.store.destroy_versions(ctx, str(cid), list(range(known + 1, current + 1)))
            return await self.store.update(ctx, str(cid), plaintext, expected_version=current)

    async def delete(self, principal: Principal, request_id: str, credential_id: str) -> None:
        cid = parse_id(credential_id)
        hidden = await (
            Credential.update({Credential.state: "deleting", Credential.updated_at: _now()})
            .where(_visible(principal) & (Credential.id == cid))
            .returning(Credential.id)
        )
        if not hidden:
            raise NotFound(CREDENTIAL_NOT_FOUND)
        ctx = CallContext(request_id=request_id, actor=principal.actor_id, workspace=principal.workspace_id)
        try:
            await self.store.destroy(ctx, principal.workspace_id, str(cid))
        except BaseException:
            # The secret is still there: show the credential again rather than lose track of it.
            await Credential.update({Credential.state: "active"}).where(Credential.id == cid)
            raise
        await Credential.delete().where(Credential.id == cid)

    async def reveal(self, principal: Principal, request_id: str, credential_id: str) -> CredentialSecret:
        cid = parse_id(credential_id)
        row = await (
            Credential.select(Credential.auth_type, Credential.kv_version)
            .where(_visible(principal) & (Credential.id == cid))
            .first()
        )
        if row is None:
            raise NotFound(CREDENTIAL_NOT_FOUND)
        ctx = CallContext(request_id=request_id, actor=principal.actor_id, workspace=principal.workspace_id)
        plaintext = await self.store.read(ctx, str(cid), row["kv_version"])
        await Credential.update({Credential.last_used_at: _now()}).where(Credential.id == cid)
        return CredentialSecret(
            id=str(cid),
            version=row["kv_version"],
            auth_type=AuthType(row["auth_type"]),
            credentials=msgspec.json.decode(plaintext),
        )

    def _select(self, principal: Principal, *extra: Any) -> Select[Credential]:
        return Credential.select(*_COLUMNS, *extra).where(_visible(principal))
