"""``db.coalesce``: how reads are gathered into statements, and how answers and errors reach their callers. (The
reads against Postgres are in tests/integration/test_coalesced_reads.py.)"""

from __future__ import annotations

import asyncio

import pytest

from db.coalesce import Coalescer


class _Statements:
    """A ``run`` that records each statement's items and, while ``held``, waits until the test releases it."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.items: list[list[int]] = []
        self.gates: list[asyncio.Event] = []
        self.held = False
        self.fail = fail

    async def __call__(self, key: str, items: list[int]) -> list[str]:
        self.items.append(list(items))
        gate = asyncio.Event()
        if not self.held:
            gate.set()
        self.gates.append(gate)
        await asyncio.sleep(0)  # a statement always takes a while
        await gate.wait()
        if self.fail is not None:
            raise self.fail
        return [f"{key}:{item}" for item in items]

    def release(self, index: int) -> None:
        self.gates[index].set()


async def _one_busy(run: _Statements, **limits: int) -> tuple[Coalescer[str, int, str], asyncio.Future[str]]:
    """A coalescer allowing one statement, which item 0 holds (``run`` holds it until released)."""
    run.held = True
    reads = Coalescer("test", run, max_in_flight=1, **limits)
    busy = asyncio.ensure_future(reads.submit("a", 0))
    await asyncio.sleep(0.01)
    assert run.items == [[0]]
    return reads, busy


async def test_reads_beyond_the_free_statements_share_one_and_get_their_own_answers() -> None:
    run = _Statements()
    reads = Coalescer("test", run, max_in_flight=4)
    answers = await asyncio.gather(*(reads.submit("a", i) for i in range(10)))
    assert answers == [f"a:{i}" for i in range(10)]
    # Four go at once, alone (the statements free when they came); the six after them share the next one.
    assert run.items == [[0], [1], [2], [3], [4, 5, 6, 7, 8, 9]]


async def test_a_lone_read_is_sent_at_once_from_its_callers_task() -> None:
    run = _Statements()
    task = asyncio.current_task()
    seen: list[asyncio.Task[object] | None] = []

    async def recording(key: str, items: list[int]) -> list[str]:
        seen.append(asyncio.current_task())
        return await run(key, items)

    reads = Coalescer("test", recording)
    assert await reads.submit("a", 1) == "a:1"
    assert run.items == [[1]]
    assert seen == [task]


async def test_groups_never_share_a_statement() -> None:
    run = _Statements()
    reads, busy = await _one_busy(run)
    waiting = [asyncio.ensure_future(reads.submit(key, i)) for key, i in (("a", 1), ("b", 1), ("a", 2))]
    await asyncio.sleep(0.01)
    run.held = False
    run.release(0)
    assert await asyncio.gather(busy, *waiting) == ["a:0", "a:1", "b:1", "a:2"]
    assert run.items == [[0], [1, 2], [1]]


async def test_reads_wait_for_a_free_statement_and_then_go_together_up_to_the_size_limit() -> None:
    run = _Statements()
    run.held = True
    reads = Coalescer("test", run, max_size=4, max_in_flight=1)
    first = asyncio.ensure_future(reads.submit("a", 0))
    await asyncio.sleep(0.01)
    assert run.items == [[0]]  # under way, and holding the only statement allowed
    rest = [asyncio.ensure_future(reads.submit("a", i)) for i in range(1, 10)]
    await asyncio.sleep(0.01)
    assert run.items == [[0]]  # the others wait
    run.held = False
    run.release(0)
    answers = await asyncio.gather(first, *rest)
    assert answers == [f"a:{i}" for i in range(10)]
    assert run.items == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_a_failed_statement_fails_each_of_its_reads_with_its_own_copy_of_the_error() -> None:
    run = _Statements(fail=ConnectionResetError("the server went away"))
    reads = Coalescer("test", run, max_in_flight=1)
    run.held = True
    busy = asyncio.ensure_future(reads.submit("a", 9))
    await asyncio.sleep(0.01)
    shared = [asyncio.ensure_future(reads.submit("a", i)) for i in range(3)]
    await asyncio.sleep(0.01)
    run.held = False
    run.release(0)
    with pytest.raises(ConnectionResetError):
        await busy
    outcomes = await asyncio.gather(*shared, return_exceptions=True)
    assert run.items == [[9], [0, 1, 2]]
    assert all(isinstance(o, ConnectionResetError) and o.args == ("the server went away",) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3
    # The coalescer is not stuck afterwards.
    run.fail = None
    assert await reads.submit("a", 7) == "a:7"


async def test_a_cancelled_read_leaves_the_others_of_its_statement_answered() -> None:
    run = _Statements()
    reads, busy = await _one_busy(run)
    kept = asyncio.ensure_future(reads.submit("a", 1))
    dropped = asyncio.ensure_future(reads.submit("a", 2))
    await asyncio.sleep(0.01)
    run.release(0)
    assert await busy == "a:0"
    await asyncio.sleep(0.01)
    assert run.items == [[0], [1, 2]]  # under way, held
    dropped.cancel()
    run.release(1)
    assert await kept == "a:1"
    with pytest.raises(asyncio.CancelledError):
        await dropped


async def test_a_read_cancelled_before_its_statement_is_not_sent() -> None:
    run = _Statements()
    reads, busy = await _one_busy(run)
    waiting = asyncio.ensure_future(reads.submit("a", 1))
    kept = asyncio.ensure_future(reads.submit("a", 2))
    await asyncio.sleep(0.01)
    waiting.cancel()
    run.held = False
    run.release(0)
    assert await busy == "a:0"
    assert await kept == "a:2"
    assert run.items == [[0], [2]]
