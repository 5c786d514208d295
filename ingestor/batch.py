"""The batcher: groups the operations of all streams into sink writes.

A batch is written when it reaches `max_ops` operations, when its oldest operation is `max_age`
seconds old, or when a stream ends; whichever comes first. Writes are awaited one at a time, so a
slow sink stops the batcher from receiving, which fills the bounded channel, which blocks the
stream readers: backpressure all the way to the producers, nothing dropped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ingestor.ops import Op
from ingestor.sinks.base import Sink

DEFAULT_MAX_OPS: Final = 1000
DEFAULT_MAX_AGE: Final = 0.050

BatchItem = list[Op] | None
"""What streams send to the batcher: the operations of one read, or None when a stream ended."""

_TIMED_OUT: Final = object()


class Batcher:
    def __init__(
        self, sink: Sink, *, max_ops: int = DEFAULT_MAX_OPS, max_age: float = DEFAULT_MAX_AGE
    ) -> None:
        if max_ops < 1:
            raise ValueError("max_ops must be positive")
        self._sink = sink
        self._max_ops = max_ops
        self._max_age = max_age
        # Counters for logs and metrics (read them; the batcher only ever increments them).
        self.batches = 0
        self.ops_written = 0
        self.write_seconds = 0.0

    async def run(self, receive: MemoryObjectReceiveStream[BatchItem]) -> None:
        """Consume until every sender has closed; then write what is left."""
        pending: list[Op] = []
        deadline = math.inf
        async with receive:
            while True:
                item: object = _TIMED_OUT
                try:
                    if pending:
                        # Safe to time out: anyio never cancels a receive whose item was delivered.
                        with anyio.move_on_after(deadline - anyio.current_time()):
                            item = await receive.receive()
                    else:
                        item = await receive.receive()
                except anyio.EndOfStream:
                    break
                if item is _TIMED_OUT or item is None:
                    await self._write(pending)
                    pending = []
                    continue
                assert isinstance(item, list)
                if not pending:
                    deadline = anyio.current_time() + self._max_age
                pending.extend(item)
                if len(pending) >= self._max_ops:
                    full = len(pending) - len(pending) % self._max_ops
                    await self._write(pending[:full])
                    pending = pending[full:]
                    deadline = anyio.current_time() + self._max_age
        await self._write(pending)

    async def _write(self, ops: Sequence[Op]) -> None:
        for start in range(0, len(ops), self._max_ops):
            batch = ops[start : start + self._max_ops]
            began = time.perf_counter()
            await self._sink.write(batch)
            self.write_seconds += time.perf_counter() - began
            self.batches += 1
            self.ops_written += len(batch)
