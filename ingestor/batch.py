"""The batcher: groups the operations of all streams into sink writes.

A batch is written as soon as the readers have nothing more to hand over ("flush on idle": the
channel is empty even after every ready task had its turn), so a lone line on a live pipe reaches
the sink at once, while a burst is still written in few, large batches. `max_ops` and `max_age` are
caps on top of that: a batch is also written when it reaches `max_ops` operations, when its oldest
operation is `max_age` seconds old (input that never pauses); whichever comes first. The end of a
stream is not a cut: a replay of thousands of small session files would otherwise commit once per
file, and the end of a stream's input is covered by the idle flush (or the age) like any pause. Sinks
that need larger batches for the network (Convex) batch again on their own.

Writes are awaited one at a time, so a slow sink stops the batcher from receiving, which fills the
bounded channel, which blocks the stream readers: backpressure all the way to the producers, nothing
dropped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Final

import anyio
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream

from ingestor.ops import Op
from ingestor.sinks.base import Sink

DEFAULT_MAX_OPS: Final = 1000
DEFAULT_MAX_AGE: Final = 0.050
TRACKED_CONVERSATIONS: Final = 10_000
"""Conversation ids kept for the end-of-run summary: a sidecar's connection carries threads for
weeks, and memory must stay flat in them (bench soak: 100,000 threads on one connection)."""

BatchItem = list[Op]
"""What streams send to the batcher: the operations of one read."""

_FLUSH: Final = object()
"""Write what is pending now: its age is up, or the readers are idle."""


class Batcher:
    def __init__(
        self,
        sink: Sink,
        *,
        max_ops: int = DEFAULT_MAX_OPS,
        max_age: float = DEFAULT_MAX_AGE,
        flush_on_idle: bool = True,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        """`clock`: what batch ages are measured on (the event loop's; tests pass one they drive)."""
        if max_ops < 1:
            raise ValueError("max_ops must be positive")
        self._sink = sink
        self._max_ops = max_ops
        self._max_age = max_age
        self._flush_on_idle = flush_on_idle
        self._clock = clock
        # Counters for logs and metrics (read them; the batcher only ever increments them).
        self.batches = 0
        self.ops_written = 0
        self.write_seconds = 0.0
        self.conversations: set[str] = set()
        """Conversations the written operations touched (for the summary at the end of a run), at
        most about `TRACKED_CONVERSATIONS`: then `conversations_capped`, and the count a lower bound."""

    @property
    def conversations_capped(self) -> bool:
        """No more conversation ids are remembered: the summary's count is a lower bound."""
        return len(self.conversations) >= TRACKED_CONVERSATIONS

    async def run(self, receive: MemoryObjectReceiveStream[BatchItem]) -> None:
        """Consume until every sender has closed; then write what is left."""
        pending: list[Op] = []
        deadline = math.inf
        max_ops = self._max_ops
        async with receive:
            while True:
                try:
                    item = await self._next(receive, pending, deadline)
                except anyio.EndOfStream:
                    break
                if item is _FLUSH:
                    await self._write(pending)
                    pending = []
                    continue
                assert isinstance(item, list)
                if not pending:
                    deadline = self._clock() + self._max_age
                pending.extend(item)
                if len(pending) >= max_ops:
                    # A burst: what is already buffered joins this write (one sink call for all).
                    while True:
                        try:
                            pending.extend(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    cut = len(pending) - len(pending) % max_ops
                    await self._write(pending[:cut])
                    pending = pending[cut:]
                    deadline = self._clock() + self._max_age
        await self._write(pending)

    async def _next(
        self, receive: MemoryObjectReceiveStream[BatchItem], pending: list[Op], deadline: float
    ) -> object:
        """The next item, or `_FLUSH` when what is pending should be written first."""
        if not pending:
            return await receive.receive()
        if self._clock() >= deadline:
            return _FLUSH  # input that never pauses: the age is a cap
        try:
            return receive.receive_nowait()
        except anyio.WouldBlock:
            pass
        if self._flush_on_idle:
            # Nothing buffered: let every task that is ready run first (a reader about to hand over
            # the rest of a burst), then flush unless that brought something.
            await checkpoint()
            try:
                return receive.receive_nowait()
            except anyio.WouldBlock:
                return _FLUSH
        # Safe to time out: anyio never cancels a receive whose item was delivered.
        with anyio.move_on_after(deadline - self._clock()):
            return await receive.receive()
        return _FLUSH

    async def _write(self, ops: Sequence[Op]) -> None:
        """Write `ops` in batches of at most `max_ops`, several in one `write_batches` call (which a
        sink that can commits at once: one SQLite transaction)."""
        if not ops:
            return
        batches = [ops[start : start + self._max_ops] for start in range(0, len(ops), self._max_ops)]
        began = time.perf_counter()
        if len(batches) > 1:
            await self._sink.write_batches(batches)
        else:
            await self._sink.write(batches[0])
        self.write_seconds += time.perf_counter() - began
        self.batches += len(batches)
        self.ops_written += len(ops)
        if not self.conversations_capped:
            self.conversations.update(
                op["args"]["conversationId"] for op in ops if op["op"] == "upsertConversation"
            )
