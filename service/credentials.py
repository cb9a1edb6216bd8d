"""The credential data path: metadata in Postgres, secrets in Vault, and no half-done state visible.

A row is written first in state ``pending`` (invisible to the API), then the secret goes to Vault, then the row
becomes ``active`` with the KV version it serves. Any failure undoes what was done; a crash in between leaves
a ``pending`` row or an unreferenced KV entry that ``credctl reconcile`` repairs. Reads serve exactly the KV
version the row names, so a KV write that Postgres never recorded is never shown.

Writers of one credential are serialized by a row lock (``SELECT ... FOR UPDATE``) and each KV write is a
check-and-set on the version the row names, so two service instances racing cannot both win.

OAuth refreshes take the same row lock, call the token endpoint while holding it, and write the new tokens and
the row before releasing it: at most one refresh per credential is in flight across all instances, and one that
acquires the lock after another refreshed sees the new version and does not refresh again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from db import queries
from db.tables import Credential, CredentialVersion
from service import secret_types
from service.auth import Principal
from service.errors import (
    CREDENTIAL_NOT_FOUND,
    BackendUnavailable,
    BadGateway,
    Conflict,
    Gone,
    NotFound,
    PreconditionFailed,
    RequestInvalid,
)
from service.oauth import EgressRefused, RefreshRejected, SingleFlight, TokenClient
from service.schemas import (
    AuthType,
    CredentialCreate,
    CredentialList,
    CredentialMasked,
    CredentialRead,
    CredentialSecret,
    CredentialType,
    CredentialUpdate,
    CredentialVersionList,
    CredentialVersionRead,
)
from service.scopes import check_scope, owner_for_create, scope_condition
from vault.errors import SecretNotFound, VaultError, VaultUnavailable, VersionConflict
from vault.secret import Secret
from vault.store import CallContext, SecretStore

log = logging.getLogger("service.credentials")

READ_FIELDS = tuple(CredentialRead.__struct_fields__)

# Stored statuses; "expired" is computed from expires_at and never stored.
ACTIVE, INACTIVE, REVOKED, ERROR, EXPIRED = "active", "inactive", "revoked", "error", "expired"


@dataclass(frozen=True, slots=True)
class ListQuery:
    skip: int = 0
    limit: int = 100
    credential_type: CredentialType | None = None
    auth_type: AuthType | None = None
    status: str | None = None
    search: str | None = None


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The lifecycle settings the service runs with."""

    max_versions: int = 10
    delete_retention: timedelta = timedelta(days=7)
    exact_count_limit: int = 10_000


def _now() -> datetime:
    return datetime.now(UTC)


def computed_status(row: dict[str, Any], now: datetime | None = None) -> str:
    if row["status"] == ACTIVE and row["expires_at"] is not None and row["expires_at"] <= (now or _now()):
        return EXPIRED
    return str(row["status"])


def etag(row: dict[str, Any]) -> str:
    """Changes whenever the credential does: its KV version or its metadata (``updated_at``)."""
    stamp = f"{row['id']}:{row['kv_version']}:{row['updated_at'].isoformat()}:{row['status']}"
    return '"' + hashlib.sha256(stamp.encode()).hexdigest()[:32] + '"'


def to_read(row: dict[str, Any]) -> CredentialRead:
    values = {name: row[name] for name in READ_FIELDS}
    values["id"] = str(row["id"])
    values["auth_type"] = AuthType(row["auth_type"])
    values["status"] = computed_status(row)
    if row["credential_type"] is not None:
        values["credential_type"] = CredentialType(row["credential_type"])
    return CredentialRead(**values)


def parse_id(credential_id: str) -> uuid.UUID:
    """A credential id from a path; anything that is not one of ours is simply not found."""
    try:
        return uuid.UUID(credential_id)
    except ValueError:
        raise NotFound(CREDENTIAL_NOT_FOUND) from None


def _visible(principal: Principal) -> queries.Where:
    """What ``principal`` may see: its workspace's finished rows, within the scopes it may see (service.scopes)."""
    return scope_condition(principal, queries.visible(principal.workspace_id))


def _status_condition(where: queries.Where, status: str, now: datetime) -> queries.Where:
    """Filter on the computed status: an active row past its expiry is 'expired', not 'active'."""
    if status == ACTIVE:
        return where.add("status = 'active' AND (expires_at IS NULL OR expires_at > {})", now)
    if status == EXPIRED:
        return where.add("status = 'active' AND expires_at <= {}", now)
    return where.add("status = {}", status)


def _ctx(principal: Principal, request_id: str) -> CallContext:
    return CallContext(request_id=request_id, actor=principal.actor_id, workspace=principal.workspace_id)


class CredentialService:
    """The operations behind the ``/credentials`` endpoints, for one principal at a time."""

    def __init__(
        self, store: SecretStore, lifecycle: Lifecycle | None = None, oauth: TokenClient | None = None
    ) -> None:
        self.store = store
        self.lifecycle = lifecycle or Lifecycle()
        self.oauth = oauth or TokenClient()
        self._refreshes: SingleFlight[dict[str, Any]] = SingleFlight()

    # -- create ------------------------------------------------------------------------------------------------

    async def create(self, principal: Principal, request_id: str, data: CredentialCreate) -> dict[str, Any]:
        user_id = owner_for_create(principal, data.credential_scope, data.user_id)
        plaintext = secret_types.validate(data.auth_type, data.credentials)
        await self._check_egress(data.auth_type, data.credentials)
        credential_id = uuid.uuid4()
        now = _now()
        row: dict[str, Any] = {
            "id": credential_id,
            "workspace_id": principal.workspace_id,
            "label": data.label,
            "description": data.description,
            "auth_type": data.auth_type.value,
            "credential_type": data.credential_type.value if data.credential_type else None,
            "credential_scope": data.credential_scope,
            "provider": data.provider if data.provider is not None else "custom",
            "user_id": user_id,
            "created_by": principal.actor_id,
            "status": ACTIVE,
            "status_reason": None,
            "status_changed_at": None,
            "expires_at": data.expires_at or secret_types.expires_at_of(data.credentials),
            "last_used_at": None,
            "created_at": now,
            "updated_at": now,
            "deleted_at": None,
            "state": "pending",
            "kv_version": 0,
        }
        await queries.insert_credential(row)
        ctx = _ctx(principal, request_id)
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
                max_versions=self.lifecycle.max_versions,
            )
            await queries.activate_credential(credential_id, stored.version, principal.actor_id)
        except BaseException:
            await self._undo_create(ctx, credential_id)
            raise
        return {**row, "state": "active", "kv_version": stored.version}

    async def _undo_create(self, ctx: CallContext, credential_id: uuid.UUID) -> None:
        """Best effort, each step on its own: what cannot be undone now, ``credctl reconcile`` finishes later
        (a ``pending`` row, or a KV entry without a row)."""
        try:
            await self.store.destroy(ctx, ctx.workspace, str(credential_id))
        except Exception as exc:
            log.warning(
                "create %s: secret not destroyed (%s); reconcile will", credential_id, type(exc).__name__
            )  # safe: ids and exception class names only
        try:
            await Credential.delete().where(Credential.id == credential_id)
        except Exception as exc:
            log.warning("create %s: pending row not removed (%s); reconcile will", credential_id, type(exc).__name__)

    # -- read --------------------------------------------------------------------------------------------------

    async def get(self, principal: Principal, credential_id: str) -> dict[str, Any]:
        row = await queries.credential(_visible(principal).add("id = {}", parse_id(credential_id)))
        if row is None:
            raise NotFound(CREDENTIAL_NOT_FOUND)
        return dict(row)

    async def get_masked(
        self, principal: Principal, request_id: str, credential_id: str
    ) -> tuple[dict[str, Any], CredentialMasked]:
        row = await self.get(principal, credential_id)
        auth_type = AuthType(row["auth_type"])
        if row["status"] == REVOKED:
            shown: dict[str, Any] = {}
        else:
            secret = await self._read_secret(principal, request_id, row, row["kv_version"])
            shown = secret_types.masked(auth_type, secret)
        return row, CredentialMasked(**msgspec.structs.asdict(to_read(row)), masked_credentials=shown)

    async def list(self, principal: Principal, query: ListQuery) -> CredentialList:
        where = _visible(principal)
        if query.credential_type is not None:
            where.add("credential_type = {}", query.credential_type.value)
        if query.auth_type is not None:
            where.add("auth_type = {}", query.auth_type.value)
        if query.status is not None:
            _status_condition(where, query.status, _now())
        if query.search:
            pattern = "%" + query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.add("label ILIKE {} OR description ILIKE {}", pattern, pattern)
        rows, total = await queries.credential_page(
            where, skip=query.skip, limit=query.limit, exact_count_limit=self.lifecycle.exact_count_limit
        )
        return CredentialList(
            credentials=[to_read(row) for row in rows],
            total=total,
            page=query.skip // query.limit + 1,
            size=query.limit,
        )

    # -- update ------------------------------------------------------------------------------------------------

    async def update(
        self,
        principal: Principal,
        request_id: str,
        credential_id: str,
        data: CredentialUpdate,
        if_match: str | None = None,
    ) -> dict[str, Any]:
        cid = parse_id(credential_id)
        changes: dict[Any, Any] = {}
        for name in ("label", "description", "credential_scope", "expires_at"):
            value = getattr(data, name)
            # Mielto's PUT is a partial update: unset or null leaves the field as it is.
            if value is not msgspec.UNSET and value is not None:
                changes[getattr(Credential, name)] = value
        new_secret: dict[str, Any] | None = None if data.credentials in (msgspec.UNSET, None) else data.credentials
        plaintext = Secret(b"")
        if new_secret is not None:
            # Checked before taking the row lock (a DNS lookup for the egress rule can take seconds); auth_type
            # never changes after create, so the unlocked read is enough.
            seen = await self.get(principal, credential_id)
            auth_type = AuthType(seen["auth_type"])
            plaintext = secret_types.validate(auth_type, new_secret)
            await self._check_egress(auth_type, new_secret)
            if any(secret_types.MASK in str(v) for v in new_secret.values()) and seen["status"] != REVOKED:
                current = await self._read_secret(principal, request_id, seen, seen["kv_version"])
                sent_back = secret_types.masked_fields_sent_back(auth_type, current, new_secret)
                if sent_back:
                    raise RequestInvalid.at(
                        ["body", "credentials", sent_back[0]],
                        "This is the masked value; send the real secret or leave the field out",
                        "masked_value",
                    )

        async with Credential._meta.db.transaction():
            row = await self._locked(principal, cid)
            if if_match is not None and if_match.strip() not in {"*", etag(row)}:
                raise PreconditionFailed("The credential changed since it was read (If-Match does not match its ETag)")
            if row["status"] == REVOKED:
                raise Conflict("The credential is revoked and cannot be changed")
            if isinstance(data.credential_scope, str):
                check_scope(principal, data.credential_scope, row["user_id"])
            if not changes and new_secret is None:
                return row
            if new_secret is not None:
                if Credential.expires_at not in changes and "expires_at" in new_secret:
                    changes[Credential.expires_at] = secret_types.expires_at_of(new_secret)
                version = await self._write_version(_ctx(principal, request_id), cid, plaintext, row["kv_version"])
                changes[Credential.kv_version] = version
                await self._record_version(cid, version, principal, "update")
                if row["status"] == ERROR:
                    # New credentials end a refresh failure: refreshing is worth trying again.
                    changes[Credential.status] = ACTIVE
                    changes[Credential.status_reason] = "credentials updated"
                    changes[Credential.status_changed_at] = _now()
                    changes[Credential.status_changed_by] = principal.actor_id
            changes[Credential.updated_at] = _now()
            await Credential.update(changes).where(Credential.id == cid)
        _apply(row, changes)
        return row

    async def _write_version(self, ctx: CallContext, cid: uuid.UUID, plaintext: Secret, known: int) -> int:
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
            log.warning("credential %s: KV at v%d, database at v%d; destroying unserved versions", cid, current, known)
            await self.store.destroy_versions(ctx, str(cid), list(range(known + 1, current + 1)))
            return await self.store.update(ctx, str(cid), plaintext, expected_version=current)

    async def _record_version(
        self, cid: uuid.UUID, version: int, principal: Principal, reason: str, **extra: Any
    ) -> None:
        await CredentialVersion.insert(
            CredentialVersion(credential_id=cid, version=version, created_by=principal.actor_id, reason=reason, **extra)
        )

    # -- versions ----------------------------------------------------------------------------------------------

    async def versions(self, principal: Principal, credential_id: str) -> CredentialVersionList:
        row = await self.get(principal, credential_id)
        records = await (
            CredentialVersion.select()
            .where(CredentialVersion.credential_id == row["id"])
            .order_by(CredentialVersion.version, ascending=False)
        )
        metadata = await self.store.metadata(principal.workspace_id, str(row["id"])) or {}
        in_vault = metadata.get("versions") or {}
        return CredentialVersionList(
            versions=[
                CredentialVersionRead(
                    version=r["version"],
                    created_at=r["created_at"],
                    created_by=r["created_by"],
                    reason=r["reason"],
                    restored_from=r["restored_from"],
                    current=r["version"] == row["kv_version"],
                    destroyed=_destroyed(in_vault.get(str(r["version"]))),
                )
                for r in records
            ]
        )

    async def restore_version(
        self, principal: Principal, request_id: str, credential_id: str, version: int
    ) -> dict[str, Any]:
        """Make version ``version`` current again, as a new version (the history is never rewritten)."""
        cid = parse_id(credential_id)
        async with Credential._meta.db.transaction():
            row = await self._locked(principal, cid)
            if row["status"] == REVOKED:
                raise Conflict("The credential is revoked and cannot be changed")
            plaintext = await self._read_version(principal, request_id, row, version)
            ctx = _ctx(principal, request_id)
            new_version = await self._write_version(ctx, cid, plaintext, row["kv_version"])
            await self._record_version(cid, new_version, principal, "restore", restored_from=version)
            changes: dict[Any, Any] = {Credential.kv_version: new_version, Credential.updated_at: _now()}
            await Credential.update(changes).where(Credential.id == cid)
        _apply(row, changes)
        return row

    # -- reveal ------------------------------------------------------------------------------------------------

    async def reveal(
        self, principal: Principal, request_id: str, credential_id: str, version: int | None = None
    ) -> CredentialSecret:
        row = await self.get(principal, credential_id)
        status = computed_status(row)
        _refuse_unusable(row)
        if AuthType(row["auth_type"]) in secret_types.REFRESHABLE and _due(row, self.oauth.policy.skew):
            row = await self._refresh_once(principal, request_id, row, force=False, margin=self.oauth.policy.skew)
        elif status == EXPIRED:
            raise Conflict(f"The credential expired at {row['expires_at'].isoformat()}")
        wanted = row["kv_version"] if version is None else version
        plaintext = await self._read_version(principal, request_id, row, wanted)
        await queries.touch_last_used(row["id"], _now())
        return CredentialSecret(
            id=str(row["id"]),
            version=wanted,
            auth_type=AuthType(row["auth_type"]),
            credentials=msgspec.json.decode(plaintext.reveal()),
        )

    async def _read_version(self, principal: Principal, request_id: str, row: dict[str, Any], version: int) -> Secret:
        """One version's plaintext: 404 for a version this credential never had, 410 for one destroyed."""
        if not 1 <= version <= row["kv_version"]:
            raise NotFound(f"Version {version} not found")
        try:
            return await self.store.read(_ctx(principal, request_id), str(row["id"]), version)
        except SecretNotFound:
            if version == row["kv_version"]:
                raise
            raise Gone(f"Version {version} was destroyed") from None

    async def _read_secret(
        self, principal: Principal, request_id: str, row: dict[str, Any], version: int
    ) -> dict[str, Any]:
        plaintext = await self._read_version(principal, request_id, row, version)
        decoded: dict[str, Any] = msgspec.json.decode(plaintext.reveal())
        return decoded

    # -- OAuth refresh -----------------------------------------------------------------------------------------

    async def refresh(self, principal: Principal, request_id: str, credential_id: str) -> dict[str, Any]:
        """Refresh now (``POST .../refresh``), whether or not the token is due; the row after it."""
        row = await self.get(principal, credential_id)
        return await self._refresh_once(principal, request_id, row, force=True, margin=self.oauth.policy.skew)

    async def refresh_due(self, window: timedelta | None = None, spread: float = 0.0) -> RefreshReport:
        """One proactive pass: refresh every active refreshable credential whose token expires within
        ``window``. Each starts after a random delay of up to ``spread`` seconds (never past its skew), so many
        tokens issued together are not all refreshed in the same second."""
        policy = self.oauth.policy
        window = policy.window if window is None else window
        now = _now()
        rows = await (
            Credential.select(Credential.id, Credential.workspace_id, Credential.kv_version, Credential.expires_at)
            .where(
                (Credential.state == "active")
                & (Credential.status == ACTIVE)
                & Credential.auth_type.is_in([t.value for t in secret_types.REFRESHABLE])
                & (Credential.expires_at <= now + window)
            )
            .order_by(Credential.expires_at)
            .limit(1000)
        )
        report = RefreshReport(due=len(rows))
        run_id = uuid.uuid4().hex[:12]
        # A few at a time: each holds a database connection while it waits for the token endpoint.
        slots = asyncio.Semaphore(4)

        async def one(row: dict[str, Any]) -> None:
            headroom = (row["expires_at"] - policy.skew - _now()).total_seconds()
            await asyncio.sleep(random.uniform(0, max(0.0, min(spread, headroom))))  # noqa: S311 (jitter)
            principal = Principal(workspace_id=row["workspace_id"], actor_id=REFRESH_ACTOR, permissions=frozenset())
            async with slots:
                try:
                    after = await self._refresh_once(
                        principal, f"refresh-due-{run_id}", dict(row), force=False, margin=window
                    )
                except RefreshRefused as exc:
                    report.failed.append(f"{row['id']}: {exc.detail}")
                except (Conflict, NotFound):
                    report.skipped += 1  # disabled or deleted meanwhile
                except (BadGateway, BackendUnavailable, VaultError) as exc:
                    report.failed.append(f"{row['id']}: {type(exc).__name__}: {exc}")
                except Exception as exc:
                    report.failed.append(f"{row['id']}: {type(exc).__name__}")
                else:
                    if after["kv_version"] != row["kv_version"]:
                        report.refreshed += 1
                    else:
                        report.skipped += 1

        await asyncio.gather(*(one(dict(row)) for row in rows))
        return report

    async def _refresh_once(
        self, principal: Principal, request_id: str, row: dict[str, Any], *, force: bool, margin: timedelta
    ) -> dict[str, Any]:
        """Refresh ``row``'s tokens unless someone else already did; the callers of this process share one try."""
        cid, seen = row["id"], row["kv_version"]
        return await self._refreshes.run(
            (principal.workspace_id, cid),
            lambda: self._refresh_locked(principal, request_id, cid, seen, force=force, margin=margin),
        )

    async def _refresh_locked(
        self, principal: Principal, request_id: str, cid: uuid.UUID, seen: int, *, force: bool, margin: timedelta
    ) -> dict[str, Any]:
        rejected: RefreshRejected | None = None
        async with Credential._meta.db.transaction():
            row = await self._locked(principal, cid)
            auth_type = AuthType(row["auth_type"])
            if auth_type not in secret_types.REFRESHABLE:
                raise Conflict(f"Credentials of auth_type '{auth_type.value}' have no refresh token to refresh")
            _refuse_unusable(row)
            if not _due(row, margin) and (not force or row["kv_version"] != seen):
                return row  # fresh: refreshed (or updated) by someone else since this caller read it
            secret = await self._read_secret(principal, request_id, row, row["kv_version"])
            now = _now()
            try:
                tokens = await self.oauth.refresh(auth_type, secret)
            except RefreshRejected as exc:
                rejected = exc
                changes: dict[Any, Any] = {
                    Credential.status: ERROR,
                    Credential.status_reason: exc.reason[:255],
                    Credential.status_changed_at: now,
                    Credential.status_changed_by: principal.actor_id,
                    Credential.updated_at: now,
                }
            else:
                plaintext = Secret(msgspec.json.encode(tokens.merged_into(secret)))
                version = await self._write_refreshed(_ctx(principal, request_id), cid, plaintext, row["kv_version"])
                await self._record_version(cid, version, principal, "refresh")
                changes = {Credential.kv_version: version, Credential.expires_at: tokens.expires_at}
                changes[Credential.updated_at] = now
            await Credential.update(changes).where(Credential.id == cid)
        _apply(row, changes)
        if rejected is not None:
            log.warning("credential %s: refresh rejected (%s); status set to error", cid, rejected.reason)
            raise RefreshRefused(_because("The credential is in error", rejected.reason))
        log.info("credential %s: tokens refreshed (v%d)", cid, row["kv_version"])  # safe: id and version only
        return row

    async def _write_refreshed(self, ctx: CallContext, cid: uuid.UUID, plaintext: Secret, known: int) -> int:
        """Store refreshed tokens. The provider may already have invalidated the old refresh token, so a Vault
        hiccup here gets a few more tries before the new one is lost."""
        for attempt in range(2):
            try:
                return await self._write_version(ctx, cid, plaintext, known)
            except VaultUnavailable:
                await asyncio.sleep(0.2 * 2**attempt)
        try:
            return await self._write_version(ctx, cid, plaintext, known)
        except VaultUnavailable:
            log.error("credential %s: new tokens not stored; re-authorize it", cid)  # safe: the id only
            raise

    async def _check_egress(self, auth_type: AuthType, credentials: dict[str, Any]) -> None:
        try:
            await self.oauth.check(auth_type, credentials)
        except EgressRefused as exc:
            raise RequestInvalid.at(["body", "credentials", "token_url"], str(exc), "url_refused") from None

    # -- status ------------------------------------------------------------------------------------------------

    async def set_status(
        self, principal: Principal, request_id: str, credential_id: str, action: str, reason: str | None
    ) -> dict[str, Any]:
        """disable (-> inactive), enable (-> active) or revoke (-> revoked: every version destroyed in Vault)."""
        cid = parse_id(credential_id)
        async with Credential._meta.db.transaction():
            row = await self._locked(principal, cid)
            if row["status"] == REVOKED:
                if action == "revoke":
                    return row
                raise Conflict("The credential is revoked; it can no longer be changed")
            target = {"disable": INACTIVE, "enable": ACTIVE, "revoke": REVOKED}[action]
            if action == "revoke":
                # Destroy first: if Vault fails, nothing changes and the caller can retry.
                # Every version KV holds, also one written above the served version by an update that failed.
                current = await self.store.current_version(principal.workspace_id, str(cid))
                versions = list(range(1, max(row["kv_version"], current or 0) + 1))
                await self.store.destroy_versions(_ctx(principal, request_id), str(cid), versions)
            now = _now()
            changes: dict[Any, Any] = {
                Credential.status: target,
                Credential.status_reason: reason,
                Credential.status_changed_at: now,
                Credential.status_changed_by: principal.actor_id,
                Credential.updated_at: now,
            }
            await Credential.update(changes).where(Credential.id == cid)
        _apply(row, changes)
        return row

    # -- delete, restore, purge --------------------------------------------------------------------------------

    async def delete(self, principal: Principal, request_id: str, credential_id: str) -> None:
        """Hide at once; the secret is destroyed when the retention window ends (at once when it is zero)."""
        cid = parse_id(credential_id)
        now = _now()
        immediate = self.lifecycle.delete_retention <= timedelta(0)
        where = _visible(principal).add("id = {}", cid)
        hidden = await queries.hide_credential(where, "deleting" if immediate else "deleted", now)
        if not hidden:
            raise NotFound(CREDENTIAL_NOT_FOUND)
        if immediate:
            await self._destroy(_ctx(principal, request_id), principal.workspace_id, cid, restore_to="active")

    async def _destroy(self, ctx: CallContext | None, workspace_id: str, cid: uuid.UUID, restore_to: str) -> None:
        try:
            await self.store.destroy(ctx, workspace_id, str(cid))
        except BaseException:
            # The secret is still there: put the row back rather than lose track of it (a row put back to 'active'
            # is not deleted any more).
            back: dict[Any, Any] = {Credential.state: restore_to}
            if restore_to == "active":
                back[Credential.deleted_at] = None
            await Credential.update(back).where(Credential.id == cid)
            raise
        await queries.forget_credential(cid)

    async def restore(self, principal: Principal, credential_id: str) -> dict[str, Any]:
        """Bring back a deleted credential within the retention window."""
        cid = parse_id(credential_id)
        now = _now()
        # The same visibility as every other operation (workspace and scope), on deleted rows inside the window.
        where = scope_condition(principal, queries.Where().add("workspace_id = {}", principal.workspace_id))
        where.add("id = {}", cid).add("state = 'deleted'").add("deleted_at > {}", now - self.lifecycle.delete_retention)
        restored = await queries.restore_credential(where, now)
        if not restored:
            raise NotFound(CREDENTIAL_NOT_FOUND)
        return await self.get(principal, credential_id)

    async def purge(self, now: datetime | None = None) -> int:
        """Destroy the secrets of deletions past the retention window; returns how many were purged."""
        cutoff = (now or _now()) - self.lifecycle.delete_retention
        due = await (
            Credential.update({Credential.state: "deleting"})
            .where((Credential.state == "deleted") & (Credential.deleted_at <= cutoff))
            .returning(Credential.id, Credential.workspace_id)
        )
        run = f"purge-{uuid.uuid4().hex}"
        purged = 0
        for row in due:
            # Audited as the purge, in the credential's workspace.
            ctx = CallContext(request_id=run, actor="purge", workspace=row["workspace_id"])
            try:
                await self._destroy(ctx, row["workspace_id"], row["id"], restore_to="deleted")
            except Exception as exc:
                log.warning("purge of %s failed (%s); retried at the next purge", row["id"], type(exc).__name__)
            else:
                purged += 1
        return purged

    # -- helpers -----------------------------------------------------------------------------------------------

    async def _locked(self, principal: Principal, cid: uuid.UUID) -> dict[str, Any]:
        """The visible row, locked until the surrounding transaction ends."""
        row = await queries.credential(_visible(principal).add("id = {}", cid), lock=True)
        if row is None:
            raise NotFound(CREDENTIAL_NOT_FOUND)
        return dict(row)


REFRESH_ACTOR = "refresh-due"


class RefreshRefused(Conflict):
    """The provider rejected a refresh just now; the credential is in status ``error``."""


@dataclass
class RefreshReport:
    """The outcome of one proactive refresh pass."""

    due: int = 0
    refreshed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.due} due: {self.refreshed} refreshed, {self.skipped} skipped (already fresh, disabled or gone), "
            f"{len(self.failed)} failed"
        )


def _due(row: dict[str, Any], margin: timedelta) -> bool:
    """Whether the access token expires within ``margin`` (a token without an expiry is never due)."""
    return row["expires_at"] is not None and row["expires_at"] <= _now() + margin


def _destroyed(version: dict[str, Any] | None) -> bool:
    """A version Vault no longer holds: destroyed, deleted, or pruned past max_versions."""
    return version is None or bool(version.get("destroyed")) or bool(version.get("deletion_time"))


def _apply(row: dict[str, Any], changes: dict[Any, Any]) -> None:
    """Reflect an UPDATE's ``{column: value}`` changes in the row the caller already holds."""
    row.update({column._meta.name: value for column, value in changes.items()})


_UNUSABLE = {
    INACTIVE: "The credential is disabled",
    REVOKED: "The credential is revoked",
    ERROR: "The credential is in error",
}


def _refuse_unusable(row: dict[str, Any]) -> None:
    """409 for a disabled, revoked or errored credential (stored statuses; 'expired' is the caller's concern)."""
    message = _UNUSABLE.get(row["status"])
    if message is not None:
        raise Conflict(_because(message, row["status_reason"]))


def _because(message: str, reason: str | None) -> str:
    return f"{message}: {reason}" if reason else message
