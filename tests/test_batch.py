"""The batcher (ingestor/batch.py): cuts by count, on idle and by age, order kept, bursts in one call.

Its waits run on a virtual clock: the asyncio event loop of looptime, whose time stands still while
tasks run and jumps straight to the next deadline when every task waits. A batch's age is then
checked to the exact second, with an age of half a minute, in no real time and whatever the load
of the machine. Time that passes while input keeps arriving (a reader busy parsing) is CPU time,
which such a loop does not count: there the batcher is given a clock the test advances itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import looptime
import pytest

from ingestor.batch import TRACKED_CONVERSATIONS, Batcher, BatchItem
from ingestor.ops import AppendEventArgs, Op
from tests.helpers.pipeline_fakes import MemorySink

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """asyncio, as the daemon runs, on an event loop with a virtual clock."""
    return ("asyncio", {"loop_factory": looptime.new_event_loop})


def _ops(n: int, prefix: str = "k") -> list[Op]:
    return [{"op": "appendEvent", "key": f"{prefix}{i}", "args": _event_args(i)} for i in range(n)]


def _event_args(n: int) -> AppendEventArgs:
    return {"conversationId": "c", "method": "m", "receivedAt": n}


class TimedSink(MemorySink):
    """Also notes the clock at each write."""

    def __init__(self) -> None:
        super().__init__()
        self.written_at: list[float] = []

    async def write(self, ops: Sequence[Op]) -> None:
        self.written_at.append(anyio.current_time())
        await super().write(ops)


async def test_the_loop_clock_is_virtual() -> None:
    """The premise of the timings below: an hour's sleep passes at once, to the microsecond."""
    began = anyio.current_time()
    await anyio.sleep(3600)
    assert anyio.current_time() - began == pytest.approx(3600, abs=1e-6)


async def test_batcher_flushes_at_count_keeping_order() -> None:
    sink = MemorySink()
    send, receive = anyio.create_memory_object_stream[BatchItem](10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(Batcher(sink, max_ops=5, max_age=60).run, receive)
        async with send:
            for item in (_ops(7), _ops(7, "m")):
                await send.send(item)
    assert [len(b) for b in sink.batches] == [5, 5, 4]
    assert [op["key"] for op in sink.ops] == [op["key"] for op in _ops(7) + _ops(7, "m")]


async def test_a_batch_is_written_as_soon_as_the_input_pauses_not_at_its_age() -> None:
    """Flush on idle: the age is a cap, not a delay."""
    sink = TimedSink()
    send, receive = anyio.create_memory_object_stream[BatchItem](10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(Batcher(sink, max_ops=1000, max_age=30).run, receive)
        async with send:
            sent_at = anyio.current_time()
            await send.send(_ops(3))
            await sink.arrived.wait()
            await anyio.sleep(10)
            await send.send(_ops(2))
            await sink.arrived.wait()
    assert [len(b) for b in sink.batches] == [3, 2]
    assert sink.written_at == [pytest.approx(sent_at), pytest.approx(sent_at + 10)]


async def test_without_flush_on_idle_a_batch_is_written_at_its_age() -> None:
    sink = TimedSink()
    send, receive = anyio.create_memory_object_stream[BatchItem](10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(Batcher(sink, max_ops=1000, max_age=30, flush_on_idle=False).run, receive)
        async with send:
            sent_at = anyio.current_time()
            await send.send(_ops(1))
            await anyio.sleep(29.9)
            assert sink.batches == []
            await send.send(_ops(1))  # joins the batch: its age counts from its first op
            await sink.arrived.wait()
    assert [len(b) for b in sink.batches] == [2]
    assert sink.written_at == [pytest.approx(sent_at + 30)]


async def test_input_that_never_pauses_is_still_written_at_the_batch_age() -> None:
    """Readers that always have more (a long replay): no idle moment ever comes, the age cuts. The
    burst is in the channel before the batcher looks, and the clock moves a tenth of a second each
    time the batcher reads it, as it would while the readers parse."""
    ticks = iter(range(1_000_000))

    def busy_clock() -> float:
        return next(ticks) / 10

    sink = MemorySink()
    send, receive = anyio.create_memory_object_stream[BatchItem](100)
    for i in range(50):
        send.send_nowait(_ops(1, f"b{i}-"))
    send.close()
    await Batcher(sink, max_ops=1000, max_age=1.0, clock=busy_clock).run(receive)
    sizes = [len(b) for b in sink.batches]
    assert len(sizes) > 1 and max(sizes) <= 11, sizes  # about 1 s of 0.1 s reads each
    assert [op["key"] for op in sink.ops] == [f"b{i}-0" for i in range(50)]


async def test_a_burst_is_one_batch_when_no_age_is_reached() -> None:
    """The control of the test above: the same burst, the clock standing still."""
    sink = MemorySink()
    send, receive = anyio.create_memory_object_stream[BatchItem](100)
    for i in range(50):
        send.send_nowait(_ops(1, f"b{i}-"))
    send.close()
    await Batcher(sink, max_ops=1000, max_age=1.0).run(receive)
    assert [len(b) for b in sink.batches] == [50]


class BatchesSink(MemorySink):
    """A sink that takes several batches in one call (as the SQLite sink does, in one transaction)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[int]] = []

    async def write_batches(self, batches: Sequence[Sequence[Op]]) -> None:
        self.calls.append([len(b) for b in batches])
        for batch in batches:
            await self.write(batch)


async def test_batcher_hands_a_buffered_burst_to_write_batches_in_one_call() -> None:
    sink = BatchesSink()
    send, receive = anyio.create_memory_object_stream[BatchItem](10)
    for i in range(5):
        send.send_nowait(_ops(3, f"b{i}-"))
    send.close()
    await Batcher(sink, max_ops=4, max_age=60).run(receive)
    # The first item alone is under max_ops; once over it, everything buffered joins one call of
    # full batches, and the rest (3 ops) is written at the end.
    assert sink.calls == [[4, 4, 4]]
    assert [len(b) for b in sink.batches] == [4, 4, 4, 3]
    assert [op["key"] for op in sink.ops] == [op["key"] for i in range(5) for op in _ops(3, f"b{i}-")]


async def test_the_conversations_a_run_touched_are_remembered_up_to_a_bound() -> None:
    """A sidecar's connection carries threads for weeks: the ids kept for the end-of-run summary stop
    at `TRACKED_CONVERSATIONS` (the count then a lower bound), so memory stays flat in them."""
    sink = MemorySink()
    batcher = Batcher(sink, max_ops=1000, max_age=60)
    per_read = 1000
    reads = TRACKED_CONVERSATIONS // per_read + 3
    send, receive = anyio.create_memory_object_stream[BatchItem](reads)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run, receive)
        async with send:
            for read in range(reads):
                await send.send(
                    [
                        {
                            "op": "upsertConversation",
                            "key": f"c{read}-{i}",
                            "args": {"conversationId": f"c{read}-{i}"},
                        }
                        for i in range(per_read)
                    ]
                )
    assert len(sink.ops) == reads * per_read  # every op written
    assert batcher.conversations_capped
    assert TRACKED_CONVERSATIONS <= len(batcher.conversations) < TRACKED_CONVERSATIONS + per_read


async def test_below_the_bound_every_conversation_is_counted() -> None:
    sink = MemorySink()
    batcher = Batcher(sink, max_ops=1000, max_age=60)
    send, receive = anyio.create_memory_object_stream[BatchItem](1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run, receive)
        async with send:
            await send.send(
                [
                    {"op": "upsertConversation", "key": f"c{i}", "args": {"conversationId": f"c{i % 7}"}}
                    for i in range(50)
                ]
            )
    assert batcher.conversations == {f"c{i}" for i in range(7)}
    assert not batcher.conversations_capped
