"""The operations behind ``/api/v1/credentials``: metadata in Postgres, secrets in Vault, nothing half-done visible.

A create writes the row ``pending`` (invisible), then the secret to Vault, then makes the row ``active`` at the KV
version it serves. Any failure undoes what was done; a crash in between leaves a ``pending`` row or an unreferenced
KV entry that ``credctl reconcile`` repairs. Reads serve exactly the KV version the row names, so a KV write that
Postgres never recorded is never shown.

Writers of one credential are serialized by a row lock (``SELECT ... FOR UPDATE``) and each KV write is a
check-and-set on the version the row names, so two service instances racing cannot both win.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec

from db import credentials as rows
from db import database, versions
from db.credentials import State
from service.context import RequestContext
from service.credentials import cursor, model, secrets
from service.credentials.idempotency import Idempotency
from service.credentials.model import Action, Credential, Status, parse_id, visible_to
from service.credentials.refresh import Refresher
from service.credentials.schemas import (
    AuthType,
    CredentialCreate,
    CredentialList,
    CredentialMasked,
    CredentialSecret,
    CredentialType,
    CredentialUpdate,
    CredentialVersionList,
    CredentialVersionRead,
)
from service.errors import CREDENTIAL_NOT_FOUND, Conflict, Gone, NotFound, PreconditionFailed, RequestInvalid
from service.events import outbox as events
from service.events.types import EventType, RevocationOutcome
from service.faults import FaultPoints, is_crash
from service.oauth.client import TokenClient
from service.oauth.egress import EgressRefused
from service.oauth.revocation import Outcome, RevocationRequest, Revoker
from service.proxy import config as proxy_config
from service.proxy.schemas import ProxyConfig
from vault.errors import SecretNotFound, VaultOutcomeUnknown, VersionConflict
from vault.secret import Secret
from vault.store import CallContext, SecretStore

log = logging.getLogger("service.credentials")


@dataclass(frozen=True, slots=True)
class ListQuery:
    skip: int = 0
    limit: int = 100
    credential_type: CredentialType | None = None
    auth_type: AuthType | None = None
    status: str | None = None
    search: str | None = None
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """How long versions and deletions are kept, and how the list counts (``CREDENTIALS_*`` lifecycle settings)."""

    max_versions: int = 10
    """Informational: versions kept is the KV mount's config, written by ``credctl vault-bootstrap``."""
    delete_retention: timedelta = timedelta(days=7)
    exact_count_limit: int = 1_000


class CredentialService:
    """The credential operations, each for the request context it is given."""

    def __init__(
        self,
        store: SecretStore,
        lifecycle: Lifecycle | None = None,
        oauth: TokenClient | None = None,
        refresh_skew: timedelta = timedelta(seconds=60),
        faults: FaultPoints | None = None,
        idempotency_ttl: timedelta = timedelta(hours=24),
    ) -> None:
        self.store = store
        self.faults = faults or FaultPoints()
        self.idempotency = Idempotency(store, idempotency_ttl)
        self.lifecycle = lifecycle or Lifecycle()
        self.oauth = oauth or TokenClient()
        self.refresher = Refresher(self, self.oauth, refresh_skew)
        self.revoker = Revoker(self.oauth.policy)

    # -- create ------------------------------------------------------------------------------------------------

    async def create(self, ctx: RequestContext, data: CredentialCreate) -> Credential:
        user_id = model.owner_for_create(ctx.principal, data.credential_scope, data.user_id)
        secret = secrets.validate(data.auth_type, data.credentials)
        await self._check_egress(secret.fields)
        proxy = None if data.proxy is None else await self._proxy(data.proxy, data.auth_type, None)
        when = model.now()
        credential = Credential(
            id=uuid.uuid4(),
            workspace_id=ctx.workspace_id,
            label=data.label,
            description=data.description,
            auth_type=data.auth_type,
            credential_type=data.credential_type,
            credential_scope=data.credential_scope,
            provider=data.provider if data.provider is not None else "custom",
            user_id=user_id,
            created_by=ctx.actor_id,
            status=Status.active,
            status_reason=None,
            status_changed_at=None,
            status_changed_by=None,
            expires_at=data.expires_at or secret.fields.expiry,
            last_used_at=None,
            created_at=when,
            updated_at=when,
            deleted_at=None,
            state=State.pending,
            kv_version=0,
            proxy=proxy,
        )
        await rows.insert(credential.row())
        self.faults.reached("create.after_row")
        call = ctx.vault()
        try:
            stored = await self.store.create(call, str(credential.id), secret.plaintext)
            self.faults.reached("create.after_vault_write")
            created = msgspec.structs.replace(credential, state=State.active, kv_version=stored.version)
            async with database.transaction():
                await rows.activate(credential.id, stored.version, ctx.actor_id)
                await events.credential_event(
                    EventType.credential_created, events.of_request(ctx), created, version=stored.version
                )
        except BaseException as exc:
            if is_crash(exc):
                raise
            await self._undo_create(call, credential.id)
            raise
        return created

    async def _undo_create(self, call: CallContext, credential_id: uuid.UUID) -> None:
        """Best effort, each step on its own: what cannot be undone now, ``credctl reconcile`` finishes later
        (a ``pending`` row, or a KV entry without a row)."""
        try:
            await self.store.destroy(call, str(credential_id))
        except Exception as exc:
            log.warning(
                "create %s: secret not destroyed (%s); reconcile will", credential_id, type(exc).__name__
            )  # safe: ids and exception class names only
        try:
            await rows.forget(credential_id)
        except Exception as exc:
            log.warning("create %s: pending row not removed (%s); reconcile will", credential_id, type(exc).__name__)

    # -- read --------------------------------------------------------------------------------------------------

    async def get(self, ctx: RequestContext, credential_id: str) -> Credential:
        return await self._visible(ctx, parse_id(credential_id))

    async def get_masked(self, ctx: RequestContext, credential_id: str) -> tuple[Credential, CredentialMasked]:
        credential = await self.get(ctx, credential_id)
        shown: dict[str, Any] = {}
        if credential.status is not Status.revoked:
            shown = secrets.masked(await self.read_secret(ctx, credential, credential.kv_version), credential.auth_type)
        return credential, credential.masked(shown)

    async def list(self, ctx: RequestContext, query: ListQuery) -> CredentialList:
        found = visible_to(
            ctx.principal,
            credential_type=query.credential_type,
            auth_type=query.auth_type,
            status=None if query.status is None else model.status_filter(query.status, model.now()),
            search=query.search or None,
        )
        after = None if query.cursor is None else cursor.decode(query.cursor)
        page, total = await rows.page(
            found,
            skip=query.skip,
            limit=query.limit,
            exact_count_limit=self.lifecycle.exact_count_limit,
            after=None if after is None else (after.created_at, after.id),
        )
        last = page[-1] if len(page) == query.limit else None
        return CredentialList(
            credentials=[Credential.from_row(row).read() for row in page],
            total=total,
            page=query.skip // query.limit + 1,
            size=query.limit,
            next_cursor=None if last is None else cursor.encode(last["created_at"], last["id"]),
        )

    async def reveal(self, ctx: RequestContext, credential_id: str, version: int | None = None) -> CredentialSecret:
        credential = await self.get(ctx, credential_id)
        credential.check(Action.use)
        if credential.refreshable and credential.due(self.refresher.skew):
            credential = await self.refresher.refresh_once(ctx, credential, force=False, margin=self.refresher.skew)
        else:
            credential.check_usable_now()
        wanted = credential.kv_version if version is None else version
        plaintext = await self.read_version(ctx, credential, wanted)
        # Checked again after the read: a revoke that returned before this point must not see its secret served.
        if await rows.touch_last_used(credential.id, model.now()) == Status.revoked:
            raise Conflict("The credential is revoked")
        await events.credential_event(EventType.credential_revealed, events.of_request(ctx), credential, version=wanted)
        return CredentialSecret(
            id=str(credential.id),
            version=wanted,
            auth_type=credential.auth_type,
            credentials=msgspec.json.decode(plaintext.reveal()),
        )

    async def versions(
        self, ctx: RequestContext, credential_id: str, skip: int = 0, limit: int = 100
    ) -> CredentialVersionList:
        credential = await self.get(ctx, credential_id)
        records = await versions.of(credential.id, skip=skip, limit=limit)
        total = await versions.count(credential.id)
        metadata = await self.store.metadata(ctx.vault(), str(credential.id)) or {}
        in_vault = metadata.get("versions") or {}
        return CredentialVersionList(
            versions=[
                CredentialVersionRead(
                    **record,
                    current=record["version"] == credential.kv_version,
                    destroyed=_destroyed(in_vault.get(str(record["version"]))),
                )
                for record in records
            ],
            total=total,
            page=skip // limit + 1,
            size=limit,
        )

    # -- write -------------------------------------------------------------------------------------------------

    async def update(
        self, ctx: RequestContext, credential_id: str, data: CredentialUpdate, if_match: str | None = None
    ) -> Credential:
        cid = parse_id(credential_id)
        # Mielto's PUT is a partial update: unset or null leaves a field as it is.
        changes: dict[str, Any] = {
            name: value
            for name in ("label", "description", "credential_scope", "expires_at")
            if (value := getattr(data, name)) is not msgspec.UNSET and value is not None
        }
        new_secret = None if data.credentials in (msgspec.UNSET, None) else data.credentials
        checked = None
        if isinstance(data.proxy, ProxyConfig):
            # Checked before the row lock, as the secret's egress rules are (a DNS lookup can take seconds).
            seen = await self._visible(ctx, cid)
            changes["proxy"] = await self._proxy(data.proxy, seen.auth_type, seen.proxy)
        if new_secret is not None:
            # Checked before taking the row lock (a DNS lookup for the egress rule can take seconds); auth_type
            # never changes after create, so the unlocked read is enough.
            seen = await self._visible(ctx, cid)
            checked = secrets.validate(seen.auth_type, new_secret)
            await self._check_egress(checked.fields)
            await self._refuse_masked_values(ctx, seen, new_secret)

        if checked is None:
            # Nothing for Vault: no lock needs holding across a Vault call, so the row is read, checked and written
            # back only if unchanged since the read (two round trips instead of five). Under contention, the lock.
            for _ in range(_UNLOCKED_ATTEMPTS):
                done = await self._update_unlocked(ctx, cid, data, changes, if_match)
                if done is not None:
                    return done
        async with database.transaction():
            credential = await self._visible(ctx, cid, lock=True)
            self._admit_change(ctx, credential, data, if_match)
            if not changes and checked is None:
                return credential
            if checked is not None:
                if "expires_at" not in changes and "expires_at" in (new_secret or {}):
                    changes["expires_at"] = checked.fields.expiry
                changes["kv_version"] = await self.write_version(ctx, credential, checked.plaintext, "update")
                changes.update(credential.new_secret_columns(ctx.actor_id))
            changes["updated_at"] = model.now()
            await rows.update(cid, changes)
            after = msgspec.structs.replace(credential, **changes)
            await events.credential_event(
                EventType.credential_updated,
                events.of_request(ctx),
                after,
                changed_fields=sorted({*changes} & _SHOWN_FIELDS | ({"credentials"} if checked else set())),
                version=after.kv_version if checked is not None else None,
            )
        return after

    @staticmethod
    def _admit_change(
        ctx: RequestContext, credential: Credential, data: CredentialUpdate, if_match: str | None
    ) -> None:
        """What an update must pass against the credential as it is now: If-Match, its state, a new scope."""
        if if_match is not None and if_match.strip() not in {"*", credential.etag}:
            raise PreconditionFailed("The credential changed since it was read (If-Match does not match its ETag)")
        credential.check(Action.change)
        if isinstance(data.credential_scope, str):
            model.check_rescope(ctx.principal, credential.credential_scope, data.credential_scope, credential.user_id)

    async def _update_unlocked(
        self, ctx: RequestContext, cid: uuid.UUID, data: CredentialUpdate, changes: dict[str, Any], if_match: str | None
    ) -> Credential | None:
        """A metadata-only update, written with its event only if the row is unchanged since it was read (None
        when it changed meanwhile: nothing was written)."""
        seen = await rows.get_versioned(visible_to(ctx.principal, id=cid))
        if seen is None:
            raise NotFound(CREDENTIAL_NOT_FOUND)
        row, row_version = seen
        credential = Credential.from_row(row)
        self._admit_change(ctx, credential, data, if_match)
        if not changes:
            return credential
        written = {**changes, "updated_at": model.now()}
        after = msgspec.structs.replace(credential, **written)
        event = events.credential_record(
            EventType.credential_updated,
            events.of_request(ctx),
            after,
            changed_fields=sorted({*written} & _SHOWN_FIELDS),
            version=None,
        )
        return after if await rows.write_if_unchanged(cid, row_version, written, event) else None

    async def _refuse_masked_values(self, ctx: RequestContext, seen: Credential, new: dict[str, Any]) -> None:
        """422 when a PUT sends back a masked value unchanged, instead of overwriting the real secret with it."""
        if seen.status is Status.revoked or not any(secrets.MASK in str(v) for v in new.values()):
            return
        current = await self.read_secret(ctx, seen, seen.kv_version)
        sent_back = secrets.masked_fields_sent_back(current, new, seen.auth_type)
        if sent_back:
            raise RequestInvalid.at(
                ["body", "credentials", sent_back[0]],
                "This is the masked value; send the real secret or leave the field out",
                "masked_value",
            )

    async def restore_version(self, ctx: RequestContext, credential_id: str, version: int) -> Credential:
        """Make version ``version`` current again, as a new version (the history is never rewritten); the current
        version itself is answered as it is, without a new version."""
        cid = parse_id(credential_id)
        async with database.transaction():
            credential = await self._visible(ctx, cid, lock=True)
            credential.check(Action.change)
            plaintext = await self.read_version(ctx, credential, version)
            if version == credential.kv_version:
                return credential  # already current: a copy of it would be a version that changes nothing
            changes: dict[str, Any] = {
                "kv_version": await self.write_version(ctx, credential, plaintext, "restore", restored_from=version),
                "updated_at": model.now(),
            }
            await rows.update(cid, changes)
            after = msgspec.structs.replace(credential, **changes)
            await events.credential_event(
                EventType.credential_updated,
                events.of_request(ctx),
                after,
                changed_fields=["credentials"],
                version=after.kv_version,
            )
        return after

    async def set_status(self, ctx: RequestContext, credential_id: str, action: str, reason: str | None) -> Credential:
        """disable (-> inactive), enable (-> active) or revoke (-> revoked: every version destroyed in Vault)."""
        cid = parse_id(credential_id)
        async with database.transaction():
            credential = await self._visible(ctx, cid, lock=True)
            changes = credential.status_change(action, reason, ctx.actor_id)
            if changes is None:
                return credential
            outcome = None
            if changes["status"] is Status.revoked:
                call = ctx.vault()
                # At the provider first, while the tokens still exist; its failure is reported, never blocking.
                outcome = await self.revoke_at_provider(call, credential)
                if outcome is not None:
                    changes["status_reason"] = _with_outcome(changes["status_reason"], outcome)
                # Destroy first: if Vault fails, nothing changes and the caller can retry. Every version KV holds,
                # also one written above the served version by an update that failed to commit.
                current = await self.store.current_version(call, str(cid))
                every = list(range(1, max(credential.kv_version, current or 0) + 1))
                await self.store.destroy_versions(call, str(cid), every)
            await rows.update(cid, changes)
            after = msgspec.structs.replace(credential, **changes)
            await events.credential_event(
                _STATUS_EVENTS[changes["status"]],
                events.of_request(ctx),
                after,
                status_reason=after.status_reason,
                revocation=_reported(outcome),
            )
        return after

    async def refresh(self, ctx: RequestContext, credential_id: str) -> Credential:
        """Refresh now (``POST .../refresh``), whether or not the token is due."""
        credential = await self.get(ctx, credential_id)
        return await self.refresher.refresh_once(ctx, credential, force=True, margin=self.refresher.skew)

    # -- delete and restore ------------------------------------------------------------------------------------

    async def delete(self, ctx: RequestContext, credential_id: str) -> None:
        """Hide at once; the secret is destroyed when the retention window ends (at once when it is zero)."""
        cid = parse_id(credential_id)
        immediate = self.lifecycle.delete_retention <= timedelta(0)
        # The row hidden if the caller sees it, and its event (filled from the row) with it: one statement.
        event = events.credential_record_of_row(EventType.credential_deleted, events.of_request(ctx), cid)
        hidden_as = State.deleting if immediate else State.deleted
        if not await rows.hide_reporting(visible_to(ctx.principal, id=cid), hidden_as, model.now(), event):
            raise NotFound(CREDENTIAL_NOT_FOUND)
        self.faults.reached("delete.after_hide")
        if immediate:
            await self.destroy(ctx.vault(), cid, put_back=State.active)

    async def destroy(self, call: CallContext, cid: uuid.UUID, put_back: State) -> None:
        """Destroy a ``deleting`` credential's secret, then forget its row; if Vault fails, put the row back in
        ``put_back`` rather than lose track of the secret."""
        row = await rows.any_state(cid)
        credential = None if row is None else Credential.from_row(row)
        outcome = None if credential is None else await self.revoke_at_provider(call, credential)
        try:
            await self.store.destroy(call, str(cid))
        except BaseException as exc:
            if not is_crash(exc):
                # A destroy that may have been carried out must not leave a visible row whose secret is gone: the
                # row stays hidden as ``deleted`` then, and the purge finishes it (destroying twice is destroying once).
                await rows.put_back(cid, State.deleted if isinstance(exc, VaultOutcomeUnknown) else put_back)
            raise
        self.faults.reached("delete.after_vault_destroy")
        async with database.transaction():
            await rows.forget(cid)
            if credential is not None:
                await events.credential_event(
                    EventType.credential_purged,
                    events.Origin(workspace_id=call.workspace, actor=call.actor, request_id=call.request_id),
                    credential,
                    revocation=_reported(outcome),
                )

    async def restore(self, ctx: RequestContext, credential_id: str) -> Credential:
        """Bring back a deleted credential within the retention window."""
        cid = parse_id(credential_id)
        when = model.now()
        async with database.transaction():
            # The same visibility as every other operation (workspace and scope), on deleted rows inside the window.
            if not await rows.restore(visible_to(ctx.principal, id=cid), when - self.lifecycle.delete_retention, when):
                raise NotFound(CREDENTIAL_NOT_FOUND)
            restored = await self.get(ctx, credential_id)
            await events.credential_event(EventType.credential_restored, events.of_request(ctx), restored)
        return restored

    # -- the secret's versions (also used by the refresher) -----------------------------------------------------

    async def _visible(self, ctx: RequestContext, cid: uuid.UUID, *, lock: bool = False) -> Credential:
        """The credential if ``ctx``'s principal may see it (locked until the transaction ends, with ``lock``)."""
        row = await rows.get(visible_to(ctx.principal, id=cid), lock=lock)
        if row is None:
            raise NotFound(CREDENTIAL_NOT_FOUND)
        return Credential.from_row(row)

    async def locked(self, ctx: RequestContext, cid: uuid.UUID) -> Credential:
        return await self._visible(ctx, cid, lock=True)

    async def read_version(self, ctx: RequestContext, credential: Credential, version: int) -> Secret:
        """One version's plaintext: 404 for a version this credential never had, 410 for one destroyed."""
        if not 1 <= version <= credential.kv_version:
            raise NotFound(f"Version {version} not found")
        try:
            return await self.store.read(ctx.vault(), str(credential.id), version)
        except SecretNotFound:
            if version == credential.kv_version:
                await self._gone_meanwhile(ctx, credential)
                raise
            raise Gone(f"Version {version} was destroyed") from None

    async def _gone_meanwhile(self, ctx: RequestContext, credential: Credential) -> None:
        """The served version vanished from Vault after the row was read: a revoke or a delete that destroyed it
        committed in between. Answer as if the request had come after it (409 revoked, 404 deleted), not 503."""
        async with database.transaction():
            # Locked: a revoke destroys the versions before it commits the row, so wait for its commit.
            row = await rows.get(visible_to(ctx.principal, id=credential.id), lock=True)
        if row is None:
            raise NotFound(CREDENTIAL_NOT_FOUND)
        Credential.from_row(row).check(Action.use)

    async def read_secret(self, ctx: RequestContext, credential: Credential, version: int) -> dict[str, Any]:
        decoded: dict[str, Any] = msgspec.json.decode((await self.read_version(ctx, credential, version)).reveal())
        return decoded

    async def write_version(
        self, ctx: RequestContext, credential: Credential, plaintext: Secret, reason: str, **extra: Any
    ) -> int:
        """Write a new KV version on top of the one Postgres serves, and record who wrote it and why.

        KV can be ahead of Postgres when an earlier update wrote Vault but failed to commit the row: those
        versions were never served. Holding the row lock, we destroy them and write on top of them.
        """
        call, cid, known = ctx.vault(), str(credential.id), credential.kv_version
        try:
            version = await self.store.update(call, cid, plaintext, expected_version=known)
        except VersionConflict:
            current = await self.store.current_version(call, cid)
            if current is None or current <= known:
                raise
            log.warning("credential %s: KV at v%d, database at v%d; destroying unserved versions", cid, current, known)
            await self.store.destroy_versions(call, cid, list(range(known + 1, current + 1)))
            version = await self.store.update(call, cid, plaintext, expected_version=current)
        self.faults.reached(f"{reason}.after_vault_write")
        await versions.record(credential.id, version, ctx.actor_id, reason, **extra)
        self.faults.reached(f"{reason}.after_version_record")
        return version

    async def _proxy(self, config: ProxyConfig, auth_type: AuthType, previous: str | None) -> str:
        policy = self.oauth.policy
        return await proxy_config.settle(config, auth_type, policy.egress, policy.timeout, previous)

    async def _check_egress(self, fields: secrets.SecretFields) -> None:
        if isinstance(fields, secrets.RefreshableSecret):
            try:
                await self.oauth.check(fields.token_url)
            except EgressRefused as exc:
                raise RequestInvalid.at(["body", "credentials", "token_url"], str(exc), "url_refused") from None
            if fields.revocation_url is not None:
                try:
                    await self.oauth.check(fields.revocation_url)
                except EgressRefused as exc:
                    message = str(exc).replace("token_url", "revocation_url")
                    raise RequestInvalid.at(["body", "credentials", "revocation_url"], message, "url_refused") from None

    async def revoke_at_provider(self, call: CallContext, credential: Credential) -> Outcome | None:
        """RFC 7009 revocation of an OAuth credential's tokens, when it names a ``revocation_url``; None when it
        does not. Never raises: the outcome says what happened."""
        if not credential.refreshable or credential.status is Status.revoked or credential.kv_version < 1:
            return None
        try:
            secret = msgspec.json.decode(
                (await self.store.read(call, str(credential.id), credential.kv_version)).reveal()
            )
            fields = secrets.read(credential.auth_type, secret)
        except Exception as exc:
            return Outcome("failed", f"the tokens could not be read ({type(exc).__name__})")
        if not isinstance(fields, secrets.RefreshableSecret) or not fields.revocation_url:
            return None
        return await self.revoker.revoke(
            RevocationRequest(
                revocation_url=fields.revocation_url,
                refresh_token=fields.refresh_token,
                access_token=fields.access_token,
                client_id=fields.client_id,
                client_secret=fields.client_secret,
                post_client_secret=fields.token_endpoint_auth_method == "client_secret_post",  # noqa: S105
            )
        )


_UNLOCKED_ATTEMPTS = 3
"""Tries of a write that holds no lock (``db.credentials.write_if_unchanged``) before taking the row's lock."""
_SHOWN_FIELDS = frozenset({"label", "description", "credential_scope", "expires_at"})
"""The fields a ``credential.updated`` names when they change (a new secret is named ``credentials``)."""
_STATUS_EVENTS = {
    Status.inactive: EventType.credential_disabled,
    Status.active: EventType.credential_enabled,
    Status.revoked: EventType.credential_revoked,
}


def _with_outcome(reason: str | None, outcome: Outcome) -> str:
    """The status reason with the provider's answer appended (the column holds 255 characters)."""
    summary = outcome.summary()
    return (summary if not reason else f"{reason}; {summary}")[:255]


def _reported(outcome: Outcome | None) -> RevocationOutcome | None:
    return None if outcome is None else RevocationOutcome(outcome=outcome.outcome, detail=outcome.detail)


def _destroyed(version: dict[str, Any] | None) -> bool:
    """A version Vault no longer holds: destroyed, deleted, or pruned past max_versions."""
    return version is None or bool(version.get("destroyed")) or bool(version.get("deletion_time"))
