"""Test doubles for the pipeline: a trivial normalizer and an in-memory sink."""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from ingestor.lines import Line
from ingestor.ops import Op


class EchoNormalizer:
    """One `appendEvent` per line, carrying the line's text; a marker op at the end of the stream."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.derive_errors = 0
        self.bad_lines: dict[str, int] = {}

    def feed_into(self, line: Line, out: list[Op]) -> None:
        out.append(
            {
                "op": "appendEvent",
                "key": f"e:{line.source}:{line.ordinal}",
                "args": {
                    "conversationId": "c1",
                    "method": "echo",
                    "payload": {"text": line.data.decode(), "oversize": line.oversize},
                    "receivedAt": line.received_at,
                },
            }
        )

    def finish(self) -> list[Op]:
        return [{"op": "appendEvent", "key": f"end:{self.source}", "args": {"method": "end"}}]


def texts(ops: Sequence[Op]) -> list[str]:
    return [op["args"]["payload"]["text"] for op in ops if op["args"]["method"] == "echo"]


class MemorySink:
    """Keeps every batch; `delay` makes it slow, `arrived` is set on each write."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[Op]] = []
        self.delay = delay
        self.closed = False
        self.arrived = anyio.Event()

    @property
    def ops(self) -> list[Op]:
        return [op for batch in self.batches for op in batch]

    async def write(self, ops: Sequence[Op]) -> None:
        if self.delay:
            await anyio.sleep(self.delay)
        self.batches.append(list(ops))
        self.arrived.set()
        self.arrived = anyio.Event()

    async def write_batches(self, batches: Sequence[Sequence[Op]]) -> None:
        for ops in batches:
            await self.write(ops)

    async def aclose(self) -> None:
        self.closed = True

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Op]:
        """Until `count` echo ops have been written."""
        with anyio.fail_after(timeout):
            while len(texts(self.ops)) < count:
                await self.arrived.wait()
        return self.ops
