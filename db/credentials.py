"""All SQL on the ``credential`` table, and the write protocol its ``state`` column carries.

A row moves ``pending`` (its secret is being written; invisible) -> ``active`` (visible) -> ``deleted`` (soft
deleted, restorable) -> ``deleting`` (its secret is being destroyed) -> gone. Each move is one function here.

Queries go through ``Table.raw`` rather than Piccolo's builder: building a query from column objects costs about
0.5 ms of Python per call (0.74 ms against 0.25 ms measured), most of the service's own CPU on a get. ``raw``
still joins the current transaction. Every value travels as a parameter; conditions are built from the typed
``CredentialFilter``, never from text a caller sent.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from db import database, outbox
from db.coalesce import Coalescer
from db.database import fetch
from db.tables import Credential


class State(enum.StrEnum):
    """Where a row is in the write protocol (see the module docstring)."""

    pending = "pending"
    active = "active"
    deleted = "deleted"
    deleting = "deleting"


COLUMNS = tuple(column._meta.db_column_name for column in Credential._meta.columns)
_SELECT = ", ".join(COLUMNS)

VISIBLE = f"state = '{State.active}'"
"""The rows the API shows. The list indexes are partial on exactly this predicate (migration 2026-11-26T18:41),
so it stays a literal in the SQL: a parameter would hide it from the planner."""


class StatusFilter(msgspec.Struct, frozen=True, kw_only=True):
    """A stored status, optionally narrowed by expiry (the computed statuses are decided by the credential model)."""

    stored: str
    expired_by: datetime | None = None
    """Only rows whose ``expires_at`` is at or before this time."""
    live_at: datetime | None = None
    """Only rows that have not expired at this time (no ``expires_at``, or one after it)."""


class CredentialFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which visible rows a query may touch: a workspace, the scopes its caller may see, and the API's filters."""

    workspace_id: str
    shared_scopes: tuple[str, ...] | None = None
    """Scopes every caller of the workspace sees; None: no scope restriction at all."""
    owned_scopes: tuple[str, ...] = ()
    """Scopes seen only when ``user_id`` is ``owner``."""
    owner: str | None = None
    id: uuid.UUID | None = None
    credential_type: str | None = None
    auth_type: str | None = None
    status: StatusFilter | None = None
    search: str | None = None
    """A case-insensitive substring of label or description."""


class _Where:
    """A conjunction of conditions with ``{}`` placeholders (Piccolo's) and their values."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, condition: str, *args: Any) -> _Where:
        self.parts.append(condition)
        self.args.extend(args)
        return self

    @property
    def sql(self) -> str:
        return " AND ".join(f"({part})" for part in self.parts) or "TRUE"


def _scoped(where: _Where, f: CredentialFilter) -> _Where:
    where.add("workspace_id = {}", f.workspace_id)
    if f.shared_scopes is not None:
        if f.owner is not None and f.owned_scopes:
            where.add(
                "credential_scope = ANY({}) OR (credential_scope = ANY({}) AND user_id = {})",
                list(f.shared_scopes),
                list(f.owned_scopes),
                f.owner,
            )
        else:
            where.add("credential_scope = ANY({})", list(f.shared_scopes))
    if f.id is not None:
        where.add("id = {}", f.id)
    return where


def _where(f: CredentialFilter) -> _Where:
    where = _scoped(_Where().add(VISIBLE), f)
    if f.credential_type is not None:
        where.add("credential_type = {}", f.credential_type)
    if f.auth_type is not None:
        where.add("auth_type = {}", f.auth_type)
    if f.status is not None:
        where.add("status = {}", f.status.stored)
        if f.status.expired_by is not None:
            where.add("expires_at <= {}", f.status.expired_by)
        if f.status.live_at is not None:
            where.add("expires_at IS NULL OR expires_at > {}", f.status.live_at)
    if f.search:
        pattern = "%" + f.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.add("label ILIKE {} OR description ILIKE {}", pattern, pattern)
    return where


# -- reads -------------------------------------------------------------------------------------------------------


async def _by_ids(f: CredentialFilter, ids: list[uuid.UUID]) -> list[dict[str, Any] | None]:
    """The visible row of each id with its ``row_version`` (None where there is none), for the reads of one filter
    that share a statement (``get`` and ``get_versioned``). Each caller gets a row of its own to keep or change."""
    distinct = list(dict.fromkeys(ids))
    # One id: ``id = $n``, whose generic plan Postgres keeps. With ``= ANY($n)`` it plans every execution anew (its
    # generic plan assumes several ids and looks dearer than a custom one): ~120 us of server CPU a lone get paid.
    where = _where(f).add("id = {}", distinct[0]) if len(distinct) == 1 else _where(f).add("id = ANY({})", distinct)
    found = {
        row["id"]: row
        for row in await fetch(f"SELECT {_SELECT}, xmin AS row_version FROM credential WHERE {where.sql}", *where.args)
    }
    answers: list[dict[str, Any] | None] = []
    given: set[uuid.UUID] = set()
    for cid in ids:
        row = found.get(cid)
        answers.append(dict(row) if row is not None and cid in given else row)
        given.add(cid)
    return answers


_coalescers: dict[tuple[str, int], tuple[Any, Coalescer[Any, Any, Any]]] = {}


def _coalescer(name: str, run: Any) -> Coalescer[Any, Any, Any] | None:
    """The bound pool's coalescer of ``name`` (one per pool: its futures belong to the pool's event loop); None
    inside a transaction, whose statements run on its connection."""
    pool = database.pooled()
    if pool is None:
        return None
    known = _coalescers.get((name, id(pool)))
    if known is None or known[0] is not pool:
        for key, (other, _) in list(_coalescers.items()):
            if other.is_closing():  # its coalescer has nothing left to do
                del _coalescers[key]
        known = _coalescers[(name, id(pool))] = (pool, Coalescer(name, run))
    return known[1]


async def get(f: CredentialFilter, *, lock: bool = False, coalesce: bool = True) -> dict[str, Any] | None:
    """One visible row, optionally locked ``FOR UPDATE`` until the surrounding transaction ends. A plain read of
    one id outside a transaction may share its statement with concurrent ones (``db.coalesce``) unless
    ``coalesce`` is False (the benchmark's floors: one statement per read, as a plain service makes)."""
    if coalesce and not lock and f.id is not None:
        seen = await _read_shared(f)
        if seen is not _UNSHARED:
            return None if seen is None else seen[0]
    where = _where(f)
    rows = await fetch(
        f"SELECT {_SELECT} FROM credential WHERE {where.sql}{' FOR UPDATE' if lock else ''}", *where.args
    )
    return rows[0] if rows else None


_UNSHARED: Any = object()


async def _read_shared(f: CredentialFilter) -> Any:
    """The row of ``f.id`` and its version from a shared statement (``db.coalesce``); ``_UNSHARED`` when reads
    cannot be shared now (inside a transaction, or without a pool)."""
    reader = None if f.id is None else _coalescer("credential_by_id", _by_ids)
    if reader is None:
        return _UNSHARED
    row: dict[str, Any] | None = await reader.submit(msgspec.structs.replace(f, id=None), f.id)
    return None if row is None else (row, row.pop("row_version"))


async def get_versioned(f: CredentialFilter) -> tuple[dict[str, Any], int] | None:
    """One visible row and its row version (Postgres's ``xmin``: it changes with every write to the row, and only
    then), for ``write_if_unchanged``. Shares its statement with concurrent reads (``get``) when it can."""
    seen = await _read_shared(f)
    if seen is not _UNSHARED:
        versioned: tuple[dict[str, Any], int] | None = seen
        return versioned
    where = _where(f)
    rows = await fetch(f"SELECT {_SELECT}, xmin AS row_version FROM credential WHERE {where.sql}", *where.args)
    if not rows:
        return None
    row = rows[0]
    return row, row.pop("row_version")


async def page(
    f: CredentialFilter,
    *,
    skip: int,
    limit: int,
    exact_count_limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """A page, newest first, and the total number of rows matching.

    ``after``: keyset pagination, rows strictly after this ``(created_at, id)`` in the list's order (the index on
    the workspace's rows newest first serves it at any depth); the total still counts every match.

    The total is exact up to ``exact_count_limit`` rows. Past it, counting every row would make each page cost
    as much as the whole workspace (seconds at a million rows), so the planner's estimate is given instead (never
    below the limit + 1).
    """
    where = _where(f)
    keyset = _Where().add("(created_at, id) < ({}, {})", *after) if after is not None else None
    rows = await fetch(
        f"SELECT {_SELECT} FROM credential WHERE {where.sql}{f' AND {keyset.sql}' if keyset else ''} "
        "ORDER BY created_at DESC, id DESC OFFSET {} LIMIT {}",
        *where.args,
        *(keyset.args if keyset else []),
        skip,
        limit,
    )
    counted = await fetch(
        f"SELECT count(*) AS n FROM (SELECT 1 FROM credential WHERE {where.sql} LIMIT {{}}) AS capped",
        *where.args,
        exact_count_limit + 1,
    )
    total = int(counted[0]["n"])
    if total <= exact_count_limit:
        return rows, total
    plan = await Credential.raw(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM credential WHERE {where.sql}", *where.args)
    found = plan[0]["QUERY PLAN"]
    estimate = int((json.loads(found) if isinstance(found, str) else found)[0]["Plan"]["Plan Rows"])
    return rows, max(estimate, exact_count_limit + 1)


async def refresh_due(
    auth_types: Iterable[str], stored_status: str, until: datetime, limit: int
) -> list[dict[str, Any]]:
    """Visible rows of ``auth_types`` in ``stored_status`` whose ``expires_at`` is at or before ``until``, soonest
    first (every workspace: the proactive refresh runs for all of them)."""
    return list(
        await Credential.raw(
            f"SELECT {_SELECT} FROM credential WHERE {VISIBLE} AND status = {{}} AND auth_type = ANY({{}}) "
            "AND expires_at <= {} ORDER BY expires_at LIMIT {}",
            stored_status,
            list(auth_types),
            until,
            limit,
        )
    )


async def stuck(before: datetime) -> list[dict[str, Any]]:
    """Rows a crash left ``pending`` or ``deleting``, unchanged since ``before``."""
    return list(
        await Credential.raw(
            "SELECT id, workspace_id, state FROM credential WHERE state = ANY({}) AND updated_at < {}",
            [State.pending, State.deleting],
            before,
        )
    )


async def every_row() -> list[dict[str, Any]]:
    """Every row's id, workspace, state and KV version (the reconciler compares them with KV)."""
    return list(await Credential.raw("SELECT id, workspace_id, state, kv_version FROM credential"))


async def locked_version(credential_id: uuid.UUID) -> tuple[State, int] | None:
    """The state and KV version of a row, locked until the surrounding transaction ends (whatever its state)."""
    rows = await Credential.raw("SELECT state, kv_version FROM credential WHERE id = {} FOR UPDATE", credential_id)
    return (State(rows[0]["state"]), int(rows[0]["kv_version"])) if rows else None


_HOLDING_SECRET = f"state IN ('{State.active}', '{State.deleted}') AND status <> {{}} AND kv_version > 0"


async def count_holding_secret(revoked: str) -> int:
    """Rows whose secret is still in Vault: visible or restorable, and not in status ``revoked``."""
    rows = await Credential.raw(f"SELECT count(*) AS n FROM credential WHERE {_HOLDING_SECRET}", revoked)
    return int(rows[0]["n"])


async def holding_secret_after(after: uuid.UUID, limit: int, revoked: str) -> list[dict[str, Any]]:
    """The next ``limit`` rows holding a secret, by id after ``after`` (keyset pagination for key rotation)."""
    return list(
        await Credential.raw(
            f"SELECT id, workspace_id, kv_version FROM credential WHERE {_HOLDING_SECRET} AND id > {{}} "
            "ORDER BY id LIMIT {}",
            revoked,
            after,
            limit,
        )
    )


# -- writes ------------------------------------------------------------------------------------------------------


async def insert(values: Mapping[str, Any]) -> None:
    """Insert a row; ``values`` holds every column."""
    await Credential.raw(
        f"INSERT INTO credential ({_SELECT}) VALUES ({', '.join('{}' for _ in COLUMNS)})",
        *(values[name] for name in COLUMNS),
    )


async def update(credential_id: uuid.UUID, changes: Mapping[str, Any]) -> None:
    """Set the given columns of one row."""
    unknown = set(changes) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not credential columns: {sorted(unknown)}")
    assignments = ", ".join(f"{name} = {{}}" for name in changes)
    await Credential.raw(f"UPDATE credential SET {assignments} WHERE id = {{}}", *changes.values(), credential_id)


async def write_if_unchanged(
    credential_id: uuid.UUID, row_version: int, changes: Mapping[str, Any], event: outbox.EventRow
) -> bool:
    """Set the given columns of one row if it is still at ``row_version`` (``get_versioned``), and record ``event``
    with the change: one statement, so both happen or neither does, in one round trip and without holding the
    row's lock between the read and the write. False: the row was written (or removed) since it was read, and
    nothing changed; the caller reads it again. ``state`` moves only through its own functions (``hide_reporting``)."""
    unknown = set(changes) - (set(COLUMNS) - {"state"})
    if unknown:
        raise ValueError(f"not credential columns (or state): {sorted(unknown)}")
    assignments = ", ".join(f"{name} = {{}}" for name in changes)
    update = f"UPDATE credential SET {assignments} WHERE id = {{}} AND xmin = {{}} RETURNING id"
    return await _reporting(update, [*changes.values(), credential_id, row_version], event)


async def hide_reporting(f: CredentialFilter, state: State, when: datetime, event: outbox.EventRow) -> bool:
    """``hide``, with ``event`` recorded in the same statement (its ``from_row`` fields taken from the hidden row):
    one round trip, which concurrent hides of the same filter share (``db.coalesce``) unless a transaction is under
    way. False when nothing matched, and then no event."""
    if state not in {State.deleted, State.deleting}:
        raise ValueError(f"hiding moves a row to deleted or deleting, not {state}")
    if not set(event.from_row) <= set(COLUMNS):
        raise ValueError(f"not credential columns: {sorted(set(event.from_row) - set(COLUMNS))}")
    if f.id is not None:
        hider = _coalescer("credential_hide", _hide_each)
        if hider is not None:
            group = _HideGroup(msgspec.structs.replace(f, id=None), state, event.from_row)
            return bool(await hider.submit(group, _Hide(f.id, when, event)))
    return await _hide_one(f, state, when, event)


async def _hide_one(f: CredentialFilter, state: State, when: datetime, event: outbox.EventRow) -> bool:
    where = _where(f)
    returned = ", ".join(("id", *event.from_row))
    update = f"UPDATE credential SET state = {{}}, deleted_at = {{}} WHERE {where.sql} RETURNING {returned}"
    return await _reporting(update, [state, when, *where.args], event)


class _HideGroup(msgspec.Struct, frozen=True):
    """Hides that may share a statement: one filter, one target state, the same event fields from the row."""

    filter: CredentialFilter
    state: State
    from_row: tuple[str, ...]


class _Hide(msgspec.Struct, frozen=True):
    id: uuid.UUID
    when: datetime
    event: outbox.EventRow


async def _hide_each(group: _HideGroup, hides: list[_Hide]) -> list[bool]:
    """The hides of one group in one statement, each with its own time and its own event; whether each matched.

    The rows are locked in id order, so two such statements never wait for each other in a cycle. Two hides of one
    row in one statement hide it once: the event of only one of them is recorded, and only that one matched.
    """
    if len(hides) == 1:  # alone: the one-row statement, whose generic plan Postgres keeps (see ``_by_ids``)
        hide = hides[0]
        return [await _hide_one(msgspec.structs.replace(group.filter, id=hide.id), group.state, hide.when, hide.event)]
    ordered = sorted(hides, key=lambda hide: hide.id)
    where = _where(group.filter)
    returned = ", ".join(f"credential.{name}" for name in ("id", *group.from_row))
    sql = (
        "WITH req AS (SELECT * FROM unnest({}::uuid[], {}::timestamptz[], {}::uuid[], {}::text[], {}::text[], "
        "{}::text[]) AS r(r_id, r_at, event_id, r_workspace, r_type, payload)), "
        f"changed AS (UPDATE credential SET state = {{}}, deleted_at = req.r_at FROM req "
        f"WHERE credential.id = req.r_id AND {where.sql} RETURNING {returned}, req.event_id, "
        "req.r_workspace AS workspace_id, req.r_type AS type, req.payload, req.r_at AS created_at), "
        f"{outbox.recording_each('changed', group.from_row)} SELECT event_id FROM changed"
    )
    matched = {
        row["event_id"]
        for row in await fetch(
            sql,
            [hide.id for hide in ordered],
            [hide.when for hide in ordered],
            [hide.event.id for hide in ordered],
            [hide.event.workspace_id for hide in ordered],
            [hide.event.type for hide in ordered],
            [hide.event.payload for hide in ordered],
            group.state,
            *where.args,
        )
    }
    return [hide.event.id in matched for hide in hides]


async def _reporting(update: str, args: list[Any], event: outbox.EventRow) -> bool:
    """``update`` (an ``UPDATE ... RETURNING``) and ``event`` in one statement; whether the update matched a row
    (when it matched none, the event is not recorded either)."""
    rows = await fetch(
        f"WITH changed AS ({update}), {outbox.recording('changed', event)} SELECT count(*) AS n FROM changed",
        *args,
        *event.args(),
    )
    return bool(rows[0]["n"])


async def activate(credential_id: uuid.UUID, version: int, actor: str) -> None:
    """``pending`` -> ``active`` at ``version``, and the record of who wrote that version: one statement, so both
    happen or neither does, in one round trip."""
    await Credential.raw(
        f"WITH activated AS (UPDATE credential SET state = '{State.active}', kv_version = {{}} WHERE id = {{}} "
        "RETURNING id) "
        "INSERT INTO credential_version (id, credential_id, version, created_at, created_by, reason) "
        "SELECT gen_random_uuid(), id, {}, now(), {}, 'create' FROM activated",
        version,
        credential_id,
        version,
        actor,
    )


async def touch_last_used(credential_id: uuid.UUID, when: datetime) -> str | None:
    """Set ``last_used_at``; the stored status at that moment (None: the row is gone)."""
    found = await Credential.raw(
        "UPDATE credential SET last_used_at = {} WHERE id = {} RETURNING status", when, credential_id
    )
    return str(found[0]["status"]) if found else None


async def hide(f: CredentialFilter, state: State, when: datetime) -> bool:
    """``active`` -> ``deleted`` (restorable) or ``deleting`` (destroy now); False when nothing matched."""
    where = _where(f)
    rows = await Credential.raw(
        f"UPDATE credential SET state = {{}}, deleted_at = {{}} WHERE {where.sql} RETURNING id",
        state,
        when,
        *where.args,
    )
    return bool(rows)


async def restore(f: CredentialFilter, deleted_after: datetime, when: datetime) -> bool:
    """``deleted`` -> ``active`` for a row deleted after ``deleted_after``; False when nothing matched."""
    where = _scoped(_Where().add(f"state = '{State.deleted}'").add("deleted_at > {}", deleted_after), f)
    rows = await Credential.raw(
        f"UPDATE credential SET state = '{State.active}', deleted_at = NULL, updated_at = {{}} "
        f"WHERE {where.sql} RETURNING id",
        when,
        *where.args,
    )
    return bool(rows)


async def claim_purge(deleted_by: datetime) -> list[dict[str, Any]]:
    """``deleted`` -> ``deleting`` for every row deleted at or before ``deleted_by``; returns their ids and
    workspaces."""
    return list(
        await Credential.raw(
            f"UPDATE credential SET state = '{State.deleting}' WHERE state = '{State.deleted}' AND deleted_at <= {{}} "
            "RETURNING id, workspace_id",
            deleted_by,
        )
    )


async def put_back(credential_id: uuid.UUID, state: State) -> None:
    """Undo a ``deleting`` whose secret could not be destroyed: back to ``deleted``, or to ``active`` (no longer
    deleted at all)."""
    if state is State.active:
        await Credential.raw(
            f"UPDATE credential SET state = '{State.active}', deleted_at = NULL WHERE id = {{}}", credential_id
        )
    else:
        await Credential.raw("UPDATE credential SET state = {} WHERE id = {}", state, credential_id)


async def forget(credential_id: uuid.UUID) -> None:
    """Remove a row and its version records, together (once its secret is destroyed, or never written)."""
    await Credential.raw(
        "WITH versions AS (DELETE FROM credential_version WHERE credential_id = {}) "
        "DELETE FROM credential WHERE id = {}",
        credential_id,
        credential_id,
    )


async def check_due(checked_before: datetime, limit: int) -> list[dict[str, Any]]:
    """Visible, active rows with provider check settings whose last check (if any) was at or before
    ``checked_before``, the longest unchecked first (every workspace: the check job runs for all)."""
    last = "(proxy ->> 'last_checked_at')::timestamptz"
    return list(
        await Credential.raw(
            f"SELECT id, workspace_id FROM credential WHERE {VISIBLE} AND status = 'active' "
            f"AND jsonb_typeof(proxy -> 'check') = 'object' AND ({last} IS NULL OR {last} <= {{}}) "
            f"ORDER BY {last} NULLS FIRST LIMIT {{}}",
            checked_before,
            limit,
        )
    )


async def claim_check(credential_id: uuid.UUID, checked_before: datetime, when: datetime) -> bool:
    """Claim a due provider check by moving its ``last_checked_at`` to ``when``, only while it is still due: of
    several instances that found it due at once, exactly one gets True (the check then records its outcome)."""
    last = "(proxy ->> 'last_checked_at')::timestamptz"
    claimed = await Credential.raw(
        "UPDATE credential SET proxy = proxy || jsonb_build_object('last_checked_at', {}::text) "
        f"WHERE id = {{}} AND {VISIBLE} AND status = 'active' AND ({last} IS NULL OR {last} <= {{}}) RETURNING id",
        when.isoformat(),
        credential_id,
        checked_before,
    )
    return bool(claimed)


async def any_state(credential_id: uuid.UUID) -> dict[str, Any] | None:
    """One row whatever its state (the purge reads what it reports and revokes)."""
    rows = await Credential.raw(f"SELECT {_SELECT} FROM credential WHERE id = {{}}", credential_id)
    return rows[0] if rows else None
