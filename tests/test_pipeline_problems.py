"""Lines stored raw only (invalid, oversize, or whose facts could not be read) are counted where an
operator sees them, and the first of each kind per stream is logged with its method (ingestor.pipeline)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from ingestor.lines import Line
from ingestor.metrics import Metrics
from ingestor.normalize import Normalizer
from ingestor.ops import Op
from ingestor.pipeline import Pipeline, PipelineConfig
from tests.helpers.pipeline_fakes import EchoNormalizer, MemorySink

pytestmark = pytest.mark.anyio

RECORDING = (
    Path(__file__).resolve().parents[1] / "fixtures" / "codex-0.169.0" / "app-server" / "multi_turn.jsonl"
).read_bytes()


class _Once:
    """A source of one stream of the given chunks."""

    def __init__(self, name: str, *parts: bytes) -> None:
        self.name = name
        self.parts = parts

    async def serve(self, handle: Any, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started(self.name)
        await handle(self.name, self._chunks())

    async def _chunks(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


async def test_invalid_and_oversize_lines_are_counted_and_the_first_per_stream_logged(
    metrics: Metrics,
) -> None:
    lines = RECORDING.splitlines(keepends=True)
    truncated = lines[3][: len(lines[3]) // 2] + b"\n"  # a line cut short, as a killed producer leaves it
    oversize = lines[4].rstrip(b"\n") + b" " * 5000 + b"\n"
    stream = b"".join([*lines[:3], truncated, truncated, oversize, *lines[5:]])
    sink = MemorySink()
    pipeline = Pipeline(
        sink,  # type: ignore[arg-type]
        Normalizer,
        PipelineConfig(max_line_bytes=4096),
        metrics=metrics,
    )
    with structlog.testing.capture_logs() as logs:
        await pipeline.run([_Once("a", stream), _Once("b", truncated)])  # type: ignore[list-item]

    assert counter(metrics, "ingestor_invalid_lines_total", reason="invalid_json") == 3
    assert counter(metrics, "ingestor_invalid_lines_total", reason="oversize") == 1
    assert counter(metrics, "ingestor_events_read_total") == len(lines) + 2
    first = [
        (entry["source"], entry["method"])
        for entry in logs
        if entry["event"].startswith("input line stored raw")
    ]
    assert sorted(first) == [("a", "ingestor/invalidJson"), ("b", "ingestor/invalidJson")]
    events = [op for op in sink.ops if op["op"] == "appendEvent"]
    assert len(events) == len(lines) + 1 + 1  # every line is still stored (the truncated one twice, and b's)


class _FactsFailOnTurns(EchoNormalizer):
    """Stands for a Codex format change: the facts of every `turn/*` line cannot be read."""

    def feed_into(self, line: Line, out: list[Op]) -> None:
        super().feed_into(line, out)
        out[-1]["args"]["method"] = line.data.split(b'"method":"', 1)[-1].split(b'"', 1)[0].decode()
        if out[-1]["args"]["method"].startswith("turn/"):
            self.derive_errors += 1


async def test_derive_errors_are_counted_and_the_first_per_stream_logged_with_its_method(
    metrics: Metrics,
) -> None:
    turn_lines = RECORDING.count(b'"method":"turn/')
    assert turn_lines > 1
    sink = MemorySink()
    pipeline = Pipeline(sink, _FactsFailOnTurns, PipelineConfig(), metrics=metrics)  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        await pipeline.run([_Once("a", RECORDING)])  # type: ignore[list-item]

    assert counter(metrics, "ingestor_derive_errors_total") == turn_lines
    [logged] = [entry for entry in logs if entry["event"].startswith("line stored raw only")]
    assert logged["source"] == "a"
    assert logged["method"].startswith("turn/")
    assert len(sink.ops) == RECORDING.count(b"\n") + 1  # every line, and the end-of-stream marker
