"""``db.coalesce``: how reads are gathered into statements, and how answers and errors reach their callers. (The
reads against Postgres are in tests/integration/test_coalesced_reads.py.)"""

from __future__ import annotations

import asyncio

import pytest

from db.coalesce import Coalescer


class _Statements:
    """A ``run`` that records each statement's items and waits for ``release`` before answering."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.items: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = fail

    async def __call__(self, key: str, items: list[int]) -> list[str]:
        self.items.append(list(items))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [f"{key}:{item}" for item in items]


async def test_reads_of_one_iteration_share_a_statement_and_get_their_own_answers() -> None:
    run = _Statements()
    reads = Coalescer("test", run)
    answers = await asyncio.gather(*(reads.submit("a", i) for i in range(10)))
    assert answers == [f"a:{i}" for i in range(10)]
    assert run.items == [list(range(10))]


async def test_a_lone_read_is_sent_at_once() -> None:
    run = _Statements()
    reads = Coalescer("test", run)
    assert await asyncio.wait_for(reads.submit("a", 1), 1) == "a:1"
    assert run.items == [[1]]


async def test_groups_never_share_a_statement() -> None:
    run = _Statements()
    reads = Coalescer("test", run)
    answers = await asyncio.gather(reads.submit("a", 1), reads.submit("b", 1), reads.submit("a", 2))
    assert answers == ["a:1", "b:1", "a:2"]
    assert sorted(run.items) == [[1], [1, 2]]


async def test_reads_wait_for_a_free_statement_and_then_go_together_up_to_the_size_limit() -> None:
    run = _Statements()
    run.release.clear()
    reads = Coalescer("test", run, max_size=4, max_in_flight=1)
    first = asyncio.ensure_future(reads.submit("a", 0))
    await asyncio.sleep(0.01)
    assert run.items == [[0]]  # under way, and holding the only statement allowed
    rest = [asyncio.ensure_future(reads.submit("a", i)) for i in range(1, 10)]
    await asyncio.sleep(0.01)
    assert run.items == [[0]]  # the others wait
    run.release.set()
    answers = await asyncio.gather(first, *rest)
    assert answers == [f"a:{i}" for i in range(10)]
    assert run.items == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_a_failed_statement_fails_each_of_its_reads_with_its_own_copy_of_the_error() -> None:
    run = _Statements(fail=ConnectionResetError("the server went away"))
    reads = Coalescer("test", run)
    outcomes = await asyncio.gather(*(reads.submit("a", i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, ConnectionResetError) and o.args == ("the server went away",) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3
    # The coalescer is not stuck afterwards.
    run.fail = None
    assert await reads.submit("a", 7) == "a:7"


async def test_a_cancelled_read_leaves_the_others_of_its_statement_answered() -> None:
    run = _Statements()
    run.release.clear()
    reads = Coalescer("test", run)
    kept = asyncio.ensure_future(reads.submit("a", 1))
    dropped = asyncio.ensure_future(reads.submit("a", 2))
    await asyncio.sleep(0.01)
    dropped.cancel()
    run.release.set()
    assert await kept == "a:1"
    with pytest.raises(asyncio.CancelledError):
        await dropped


async def test_a_read_cancelled_before_its_statement_is_not_sent() -> None:
    run = _Statements()
    run.release.clear()
    reads = Coalescer("test", run, max_in_flight=1)
    busy = asyncio.ensure_future(reads.submit("a", 0))
    await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(reads.submit("a", 1))
    kept = asyncio.ensure_future(reads.submit("a", 2))
    await asyncio.sleep(0.01)
    waiting.cancel()
    run.release.set()
    assert await busy == "a:0"
    assert await kept == "a:2"
    assert run.items == [[0], [2]]
