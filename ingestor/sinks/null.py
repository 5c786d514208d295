"""The null sink: does the work a real sink does up to the wire (encoding every op), stores nothing.

For benchmarks: `ingestor replay FILE --sink null` measures the daemon itself, not a database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import orjson

from ingestor.ops import Op


class NullSink:
    def __init__(self) -> None:
        self.ops = 0
        self.bytes = 0

    async def write(self, ops: Sequence[Op]) -> None:
        # The same encoding cost the JSONL and Convex sinks pay: one JSON document per batch.
        self.bytes += len(orjson.dumps(ops))
        self.ops += len(ops)

    async def aclose(self) -> None:
        return None


@asynccontextmanager
async def open_null_sink() -> AsyncIterator[NullSink]:
    yield NullSink()
