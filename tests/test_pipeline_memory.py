"""However many producers wait for a blocked sink, only a bounded number of them hold parsed
operations; the others hold their raw bytes (ingestor.pipeline). Then everything is delivered."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from ingestor.lines import Line
from ingestor.ops import Op
from ingestor.pipeline import Pipeline, PipelineConfig
from ingestor.sources.sockets import UnixSource
from tests.helpers.pipeline_fakes import EchoNormalizer, texts

pytestmark = pytest.mark.anyio

PRODUCERS = 40
QUEUE_CHUNKS = 2


class GatedSink:
    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.ops: list[Op] = []

    async def write(self, ops: Sequence[Op]) -> None:
        await self.gate.wait()
        self.ops.extend(ops)

    async def write_batches(self, batches: Sequence[Sequence[Op]]) -> None:
        for ops in batches:
            await self.write(ops)

    async def aclose(self) -> None:
        pass


async def test_blocked_producers_hold_raw_bytes_not_parsed_operations(tmp_path: Path) -> None:
    fed: set[str] = set()

    class Recording(EchoNormalizer):
        def feed_into(self, line: Line, out: list[Op]) -> None:
            fed.add(line.source)
            super().feed_into(line, out)

    path = str(tmp_path / "in.sock")
    sink = GatedSink()
    config = PipelineConfig(batch_max_ops=1, queue_chunks=QUEUE_CHUNKS)
    pipeline = Pipeline(sink, Recording, config)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run, [UnixSource(path)])
        producers = []
        for index in range(PRODUCERS):
            producer = await anyio.connect_unix(path)
            await producer.send(b"line %d\n" % index)
            producers.append(producer)
        for _ in range(100):  # let every reader that can take its chunk do so
            await anyio.sleep(0.01)
        # One batch in the blocked write, the channel's lists, and the streams holding one to hand over.
        assert len(fed) <= 1 + 2 * QUEUE_CHUNKS
        sink.gate.set()
        with anyio.fail_after(10):
            while len(texts(sink.ops)) < PRODUCERS:
                await anyio.sleep(0.01)
        assert len(fed) == PRODUCERS
        pipeline.stop()
    for producer in producers:
        await producer.aclose()
    assert sorted(texts(sink.ops)) == sorted(f"line {index}" for index in range(PRODUCERS))
