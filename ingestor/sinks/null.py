"""The null sink: counts the operations it is given and drops them.

`ingestor replay FILE --sink null` measures the daemon up to its sinks (reading, framing,
normalization, batching), nothing a store or the wire adds: encoding for Convex is measured with the
Convex sink (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from ingestor.ops import Op


class NullSink:
    def __init__(self) -> None:
        self.ops = 0

    async def write(self, ops: Sequence[Op]) -> None:
        self.ops += len(ops)

    async def write_batches(self, batches: Sequence[Sequence[Op]]) -> None:
        self.ops += sum(map(len, batches))

    async def aclose(self) -> None:
        return None


@asynccontextmanager
async def open_null_sink() -> AsyncIterator[NullSink]:
    yield NullSink()
