"""The JSONL sink: the normalized operations as Convex would receive them (`ingestor.sinks.wire`), one
JSON object per line, to a file or stdout.

For debugging the normalizer (`ingestor replay run.jsonl --sink jsonl:-`). A file is overwritten,
like a shell redirection: one run's operations, not an accumulation of runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import BinaryIO

import anyio
import anyio.to_thread
import orjson

from ingestor.ops import Op
from ingestor.sinks.wire import convex_op

STDOUT = "-"


class JsonlSink:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._limiter = anyio.CapacityLimiter(1)  # writes in batch order

    async def write(self, ops: Sequence[Op]) -> None:
        data = b"".join(orjson.dumps(convex_op(op), option=orjson.OPT_APPEND_NEWLINE) for op in ops)
        # A reader on the other end of a pipe may be slow: block a worker thread, not the loop.
        await anyio.to_thread.run_sync(self._write, data, limiter=self._limiter)

    async def write_batches(self, batches: Sequence[Sequence[Op]]) -> None:
        for ops in batches:
            await self.write(ops)

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._out.flush, limiter=self._limiter)


@asynccontextmanager
async def open_jsonl_sink(path: str) -> AsyncIterator[JsonlSink]:
    # Closed below, after the sink's final flush (a `with` would not fit the two cases).
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb") if path == STDOUT else open(path, "wb")  # noqa: SIM115
    try:
        sink = JsonlSink(out)
        yield sink
        await sink.aclose()
    finally:
        out.close()
