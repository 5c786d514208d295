"""The daemon's data path: sources -> framing -> one normalizer per stream -> batcher -> sink.

Work is done per chunk read, not per line: a chunk is split into lines, every line goes through the
stream's normalizer in a plain loop, and the resulting operations travel to the batcher as one list.
Only that hand-over awaits, and the channel is bounded, so a slow sink throttles reading.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Final, Protocol

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from ingestor.batch import DEFAULT_MAX_AGE, DEFAULT_MAX_OPS, Batcher, BatchItem
from ingestor.framing import DEFAULT_MAX_LINE_BYTES, LineSplitter
from ingestor.lines import Line
from ingestor.logging import get_logger
from ingestor.metrics import METRICS, Metrics
from ingestor.ops import Op
from ingestor.sinks.base import Sink, Spooling
from ingestor.sources import Source

log = get_logger("ingestor.pipeline")


class StreamNormalizer(Protocol):
    """What the pipeline needs from `ingestor.normalize.Normalizer` (one per input stream)."""

    derive_errors: int
    """Lines stored raw only because their facts could not be read (a Codex format change?)."""
    bad_lines: dict[str, int]
    """Lines stored raw only (not JSON, too long, or JSON no Codex stream kind explains), by method."""

    def feed_into(self, line: Line, out: list[Op]) -> None: ...

    def finish(self) -> list[Op]: ...


NormalizerFactory = Callable[[str], StreamNormalizer]
"""Makes the normalizer of a new stream from the stream's name (`Line.source`)."""


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    batch_max_ops: int = DEFAULT_MAX_OPS
    batch_max_age: float = DEFAULT_MAX_AGE
    flush_on_idle: bool = True
    """Write a batch as soon as the readers have nothing more buffered (the ops/age bounds are caps)."""
    queue_chunks: int = 8
    """Operation lists (one per read) that may wait for the batcher, and streams that may hold one
    ready to hand over: the bound on buffered parsed work (raw chunks of other producers wait)."""


@dataclass(slots=True)
class PipelineStats:
    """Running totals, bumped once per read chunk (cheap enough to keep always on)."""

    streams_opened: int = 0
    streams_closed: int = 0
    bytes_read: int = 0
    lines: int = 0
    ops: int = 0
    normalizer_errors: int = 0
    not_json_lines: int = 0
    """Lines that are not JSON (or not UTF-8): stored raw as `ingestor/invalidJson`."""
    unknown_lines: int = 0
    """JSON lines that no Codex stream kind explains: stored raw as `ingestor/unknown`."""


NOT_CODEX_EXAMPLES: Final = 5


@dataclass(frozen=True, slots=True)
class NotCodexStream:
    """A stream with lines that are not Codex JSON (stored raw, nothing derived from them)."""

    source: str
    lines: int
    not_json: int
    unknown: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


GC_YOUNG_THRESHOLD = 100_000
"""Allocations between young-generation collections while the pipeline runs (CPython's default: 700).
Every line allocates a few containers (the parsed line, its ops) that refcounting frees anyway; at the
default the cycle collector ran every ~150 lines, scanning batches still waiting for the sink, and
cost a fifth of the CPU of a replay. Cyclic garbage is rare here: collecting it later costs nothing."""


@contextlib.contextmanager
def _throughput_gc() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_YOUNG_THRESHOLD), max(before[1], 50), max(before[2], 1000))
    try:
        yield
    finally:
        gc.set_threshold(*before)


class Pipeline:
    def __init__(
        self,
        sink: Sink,
        normalizer_factory: NormalizerFactory,
        config: PipelineConfig | None = None,
        *,
        metrics: Metrics = METRICS,
    ) -> None:
        self._config = config or PipelineConfig()
        self._metrics = metrics
        self._sink = sink
        self._normalizer_factory = normalizer_factory
        self._send, self._receive = anyio.create_memory_object_stream[BatchItem](self._config.queue_chunks)
        self._handing_over = anyio.CapacityLimiter(self._config.queue_chunks)
        """Streams normalizing a chunk or waiting to hand its ops over: the bound on parsed work
        outside the channel, whatever the number of producers."""
        self._sources_scope = anyio.CancelScope()
        self.stopped = False
        """Whether `stop()` ended the run (rather than the sources reaching their end)."""
        self.batcher = Batcher(
            sink,
            max_ops=self._config.batch_max_ops,
            max_age=self._config.batch_max_age,
            flush_on_idle=self._config.flush_on_idle,
        )
        self.stats = PipelineStats()
        self.not_codex_streams = 0
        self.not_codex_examples: list[NotCodexStream] = []
        """The first few streams with lines that are not Codex JSON (`not_codex_streams` in all)."""

    async def run(
        self, sources: Sequence[Source], *, task_status: TaskStatus[list[str]] = TASK_STATUS_IGNORED
    ) -> None:
        """Run until every source has ended (or `stop()`), then write everything still buffered.

        Reports the sources' addresses through `task_status` once all are accepting input. The sink
        is not closed here: whoever opened it closes it.
        """
        with _throughput_gc():
            await self._run(sources, task_status)

    async def _run(self, sources: Sequence[Source], task_status: TaskStatus[list[str]]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.batcher.run, self._receive)
            async with self._send:
                with self._sources_scope:
                    async with anyio.create_task_group() as sources_tg:
                        addresses = [
                            await sources_tg.start(source.serve, self.handle_stream) for source in sources
                        ]
                        log.debug("sources ready", sources=addresses)
                        task_status.started(addresses)

    def summary(self) -> dict[str, int | float]:
        """Totals so far, for the log line at the end of a run."""
        batcher = self.batcher
        return {
            **asdict(self.stats),
            "batches": batcher.batches,
            "ops_written": batcher.ops_written,
            "write_seconds": round(batcher.write_seconds, 3),
        }

    def stop(self) -> None:
        """Stop reading (listeners close, streams end); what was read is still normalized and written."""
        self.stopped = True
        self._sources_scope.cancel()
        if isinstance(self._sink, Spooling):
            # What was read goes into a full spool too (a bounded amount): stopping never waits for Convex.
            self._sink.input_stopped()

    async def handle_stream(self, name: str, chunks: AsyncGenerator[bytes, None]) -> None:
        """Process one input stream to its end (or until stopped). Its operations stay in order.

        Stopped (`stop()`, a signal), every line read so far is still stored: a hand-over to the
        batcher is never cut short (a cancelled `send` would drop its operations), and a line whose
        newline has not arrived is left out, not stored as a truncated (invalid) line: it was not read
        whole. At the end of input, a last line without a newline is a line."""
        stats = self.stats
        stats.streams_opened += 1
        splitter = LineSplitter(name, self._config.max_line_bytes)
        normalizer = self._normalizer_factory(name)
        failures = _Failures(name)
        problems = _LineProblems(name, self._metrics)
        send = self._send.send
        handing_over = self._handing_over
        ended = False
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    # However many producers wait for a full sink, only so many hold parsed work:
                    # the others hold their raw chunk, unparsed, until the batcher takes more. A free
                    # token is taken without an event-loop round trip (`async with` would make two per
                    # read): `send` below is this read's scheduling point, as before the bound.
                    await checkpoint_if_cancelled()
                    try:
                        handing_over.acquire_nowait()
                    except anyio.WouldBlock:
                        await handing_over.acquire()
                    try:
                        lines = splitter.feed(chunk, now_ms())
                        ops = self._normalize(normalizer, lines, failures, problems)
                        stats.bytes_read += len(chunk)
                        stats.lines += len(lines)
                        self._metrics.events_read.inc(len(lines))
                        stats.ops += len(ops)
                        if ops:
                            with anyio.CancelScope(shield=True):
                                await send(ops)
                        else:
                            await checkpoint()  # a long line arriving in many reads must not starve others
                    finally:
                        handing_over.release()
                    if ops and self.stopped:
                        break  # a regular file's reads never wait, so the cancellation can't land there
                else:
                    ended = True
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the batcher died on a sink error: that error is the one reported
        finally:
            # Reached on end of input and on stop(): what was read is still delivered.
            with anyio.CancelScope(shield=True):
                if ended:
                    lines = splitter.finish(now_ms())
                else:
                    lines = []
                    if splitter.unfinished_bytes:
                        log.warning(
                            "stopped inside a line: its start is not stored",
                            source=name,
                            bytes=splitter.unfinished_bytes,
                        )
                ops = self._normalize(normalizer, lines, failures, problems)
                try:
                    finished = normalizer.finish()
                except Exception:
                    stats.normalizer_errors += 1
                    failures.record(at="finish")
                else:
                    # Lines held until the end (no conversation id came) are read only now.
                    if normalizer.derive_errors != problems.derive_errors:
                        problems.derive_failed(
                            normalizer.derive_errors, lines[-1] if lines else None, finished, 0
                        )
                    problems.count_bad_lines(normalizer.bad_lines)
                    ops.extend(finished)
                failures.summarize()
                self._count_not_codex(name, problems, splitter.ordinal)
                stats.lines += len(lines)
                self._metrics.events_read.inc(len(lines))
                stats.ops += len(ops)
                stats.streams_closed += 1
                # If the batcher died (sink failure), its error is the one reported; not this.
                if ops:
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await send(ops)

    def _count_not_codex(self, source: str, problems: _LineProblems, lines: int) -> None:
        if not (problems.not_json or problems.unknown):
            return
        self.stats.not_json_lines += problems.not_json
        self.stats.unknown_lines += problems.unknown
        self.not_codex_streams += 1
        if len(self.not_codex_examples) < NOT_CODEX_EXAMPLES:
            self.not_codex_examples.append(NotCodexStream(source, lines, problems.not_json, problems.unknown))

    def _normalize(
        self, normalizer: StreamNormalizer, lines: list[Line], failures: _Failures, problems: _LineProblems
    ) -> list[Op]:
        ops: list[Op] = []
        feed_into = normalizer.feed_into
        for line in lines:
            start = len(ops)
            # A normalizer bug on one line must not take down every producer's stream.
            try:
                feed_into(line, ops)
            except Exception:
                self.stats.normalizer_errors += 1
                failures.record(ordinal=line.ordinal)
            if normalizer.derive_errors != problems.derive_errors:
                problems.derive_failed(normalizer.derive_errors, line, ops, start)
        problems.count_bad_lines(normalizer.bad_lines)
        return ops


class _Failures:
    """Normalizer failures of one stream: the first is logged with its traceback, the rest only
    counted and summed up when the stream ends (a broken normalizer must not flood the log)."""

    __slots__ = ("count", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.count = 0

    def record(self, **where: object) -> None:
        self.count += 1
        if self.count == 1:
            log.exception(
                "normalizer failed (further failures of this stream are only counted)",
                source=self.source,
                **where,
            )

    def summarize(self) -> None:
        if self.count > 1:
            log.error("normalizer failures in stream", source=self.source, failures=self.count)


INVALID_JSON: Final = "ingestor/invalidJson"
UNKNOWN: Final = "ingestor/unknown"
BAD_LINE_METHODS: Final = {
    INVALID_JSON: "invalid_json",
    "ingestor/oversize": "oversize",
    "ingestor/unparsed": "too_many_values",
}
"""The raw events of lines that are not JSON, too long, or too costly to parse
(ingestor/normalize/raw.py), by reason."""


class _LineProblems:
    """Lines of one stream stored raw only: invalid or oversize, or whose facts could not be read.
    Counted in metrics; the first of each kind is logged with its method, so a Codex format change
    is noticed the day it ships, without a log line per line."""

    __slots__ = ("bad_counted", "bad_logged", "derive_errors", "metrics", "not_json", "source", "unknown")

    def __init__(self, source: str, metrics: Metrics) -> None:
        self.source = source
        self.metrics = metrics
        self.derive_errors = 0
        self.bad_counted: dict[str, int] = {}
        self.bad_logged = False
        self.not_json = 0
        self.unknown = 0

    def derive_failed(self, total: int, line: Line | None, ops: list[Op], start: int) -> None:
        """The normalizer's count of derive errors moved to `total` while it read `line`, whose ops
        are `ops[start:]` (its raw event last among them: the facts of a failed line are dropped)."""
        self.metrics.derive_errors.inc(total - self.derive_errors)
        if self.derive_errors == 0:
            events = [op for op in ops[start:] if op["op"] == "appendEvent"]
            log.warning(
                "line stored raw only: its facts could not be read (a Codex format change?); "
                "further ones in this stream are only counted",
                source=self.source,
                ordinal=None if line is None else line.ordinal,
                method=events[-1]["args"].get("method") if events else None,
            )
        self.derive_errors = total

    def count_bad_lines(self, counts: Mapping[str, int]) -> None:
        """The normalizer's count of raw-only lines by method is now `counts` (compared once per read,
        not looked for among every operation)."""
        if counts == self.bad_counted:
            return
        for method, total in counts.items():
            new = total - self.bad_counted.get(method, 0)
            if not new:
                continue
            if method == UNKNOWN:
                self.unknown += new
                continue
            if method == INVALID_JSON:
                self.not_json += new
            reason = BAD_LINE_METHODS.get(method)
            if reason is None:
                continue
            self.metrics.bad_lines.labels(reason=reason).inc(new)
            if not self.bad_logged:
                self.bad_logged = True
                log.warning(
                    "input line stored raw: not JSON or too long; further ones in this stream "
                    "are only counted",
                    source=self.source,
                    method=method,
                )
        self.bad_counted = dict(counts)
