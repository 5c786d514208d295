"""The Convex sink: spool every op durably, deliver from the spool in FIFO batches, exactly once.

`write()` returns once the ops are in the spool (SQLite, see ingestor/spool.py). One delivery loop
reads batches back in arrival order, so writes for a conversation reach Convex in order, and calls
`ingest:applyBatch` (one transaction per batch; every op has a deterministic key and the mutation
skips keys it already applied, so re-sending after a lost response or a crash is harmless).

Failures (classified in ingestor/convex_api.py):
- transient (network, timeout, 408, 429, 5xx): retried with jittered exponential backoff, forever;
  the spool absorbs the input meanwhile and `write()` blocks when it reaches its cap.
- auth (401/403) or a missing function: logged once per incident, not ready, retried slowly.
- rejected (400, or `status:"error"`): nothing was applied; the batch is bisected until the
  offending ops are alone, the rest is delivered, and each offender goes to the dead-letter file.
  This also copes with batches that exceed a transaction limit (they succeed once halved).
- per-op `rejected` results: the rest of the batch applied; offenders go to the dead-letter file.

An op larger than a batch may carry (`batch_max_bytes`) is delivered alone and staged: its large
columns are uploaded first, part by part (`ingest:stageBlobPart`, each part its own retried,
idempotent request), then the op is applied with references to them (docs/operations.md, "Values
larger than one call"). It stays spooled until that last call is confirmed; the stage keys derive
from the op, so staging again after a crash or a retry finds the parts already there. A smaller op
that Convex still refuses alone as too large (it counts sizes its own way) is staged the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_random_exponential,
)

from ingestor import spool as spool_module
from ingestor.convex_api import (
    ADMIN_IDENTITY,
    AuthError,
    ConfigError,
    ConvexHttp,
    RejectedError,
    TransientError,
    envelope,
)
from ingestor.deployment import (
    KEY_VARIABLES,
    Deployment,
    DeploymentError,
    default_state_dir,
    resolve_deployment,
)
from ingestor.logging import get_logger, redact
from ingestor.metrics import HEALTH, METRICS, Health, Metrics
from ingestor.ops import Op, make_key
from ingestor.sinks.base import Leftover, json_numbers
from ingestor.sinks.factory import SinkError
from ingestor.sinks.wire import encode_op
from ingestor.spool import SEP, Batch, DiskFullError, Spool

APPLY_BATCH: Final = "ingest:applyBatch"
MIB: Final = 1024 * 1024
# What `ingest:applyBatch` accepts per call (convex/lib/limits.ts: MAX_BATCH_OPS, MAX_BATCH_BYTES),
# which keeps under Convex's own ceilings (8,192 array items, 16 MiB of arguments, 16 MiB written
# per transaction). Our JSON bytes approximate Convex's value size; a batch that is still refused
# as too large is bisected like any rejected batch.
APPLY_BATCH_MAX_OPS: Final = 2000
APPLY_BATCH_MAX_BYTES: Final = 8 * MIB
STAGE_PART: Final = "ingest:stageBlobPart"
# convex/lib/limits.ts: BLOB_PART_BYTES (UTF-8 bytes per part) and INLINE_VALUE_BYTES (values up to
# this size stay in their document, so staging them would gain nothing).
STAGE_PART_BYTES: Final = 512 * 1024
STAGE_MIN_BYTES: Final = 64 * 1024
# Columns an op may stage: convex/lib/blobs.ts `SPILLABLE` without `command` (its merge rule needs the
# value; argv is bounded by the OS far below a batch anyway).
STAGEABLE: Final[Mapping[str, tuple[str, ...]]] = {
    "upsertTurn": ("error",),
    "upsertCommand": ("parsedCmd", "parsedCmdJson", "stdout", "stderr", "aggregatedOutput"),
    "appendMessage": ("content", "rawContent", "rawContentJson"),
    "appendReasoningSection": ("summaryText", "rawContent", "rawContentJson"),
    "appendCommandChunk": ("chunkBase64",),
    "appendEvent": ("payload", "payloadJson"),
}
# The ConvexError code of an op whose staged parts are not all there (convex/lib/stages.ts).
_STAGED_PARTS_MISSING: Final = "StagedPartsMissing"
# A lone op refused for its size (our `BatchTooLarge`, or Convex's own argument limit): Convex counts
# sizes its own way (a number is 9 bytes), so an op under the batch budget in JSON may still be.
_TOO_LARGE: Final = re.compile(r"BatchTooLarge|too large", re.IGNORECASE)
DEAD_LETTER_FILE: Final = "dead-letter.jsonl"
DISK_FULL_RETRY: Final = 1.0
"""Seconds between appends tried on a full state volume when no delivery frees room meanwhile."""
# A local backend or stand-in may run without a key; anywhere else a missing key is worth a warning.
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})

log = get_logger("ingestor.sinks.convex")


@dataclass(frozen=True)
class ConvexSinkConfig:
    state_dir: Path
    batch_max_ops: int = 1000
    batch_max_bytes: int = 4 * MIB
    batch_max_age: float = 0.05
    """Seconds the oldest spooled op may wait for company before its batch is sent anyway."""
    spool_max_bytes: int = 1024 * MIB
    flush_timeout: float = 10.0
    retry_max_wait: float = 30.0
    """Cap of the exponential backoff for transient failures."""
    retry_initial_wait: float = 0.1
    auth_retry_wait: float = 30.0
    """Pause between attempts while the key is refused or the function is missing."""
    unready_after: float = 5.0
    """Seconds of failing deliveries (no success since) after which `/readyz` says not ready."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch_max_ops <= APPLY_BATCH_MAX_OPS:
            raise ValueError(f"batch max ops must be between 1 and {APPLY_BATCH_MAX_OPS}")
        if not 1 <= self.batch_max_bytes <= APPLY_BATCH_MAX_BYTES:
            raise ValueError(f"batch max bytes must be between 1 and {APPLY_BATCH_MAX_BYTES}")
        if (
            self.batch_max_age < 0
            or self.flush_timeout < 0
            or self.unready_after < 0
            or self.spool_max_bytes < 1
        ):
            raise ValueError(
                "batch max age, flush timeout and unready-after must be >= 0, spool max bytes > 0"
            )


def _now_ms() -> int:
    return int(time.time() * 1000)


class ConvexSink:
    """Use through :func:`open_convex_sink`, which runs the delivery loop beside the caller."""

    def __init__(
        self,
        api: ConvexHttp,
        spool: Spool,
        config: ConvexSinkConfig,
        *,
        metrics: Metrics = METRICS,
        health: Health = HEALTH,
    ) -> None:
        self._api = api
        self._spool = spool
        self._config = config
        self._metrics = metrics
        self.counts: Counter[str] = Counter()
        """Delivered operations by result (inserted, updated, duplicate, rejected), for the run's summary."""
        self._health = health
        self._dead_letter_path = config.state_dir / DEAD_LETTER_FILE
        self._wakeup = anyio.Event()
        self._space = anyio.Event()
        self._drained = anyio.Event()
        self._closing = False
        self._closed = False
        self._input_stopped = False
        self._head_at: int | None = None
        self._next: Batch | None = None
        """The next batch, when it was read while the previous one was being sent."""
        self._unconfirmed: tuple[int, bool] | None = None
        """(last op, durable) of the batch delivered last, until the spool has forgotten it."""
        self._dead_lettered = False
        self._incident: str | None = None
        self._failures = 0
        """Failed calls since the last answered one."""
        self._delivering_at: int | None = None
        """When the batch being delivered was spooled (epoch ms); None between batches."""
        metrics.oldest_undelivered_age.set_function(self._oldest_undelivered_age)
        # Full jitter: a random wait up to initial * 2^attempt (capped), so restarted daemons spread out.
        self._backoff = wait_random_exponential(
            multiplier=config.retry_initial_wait, max=config.retry_max_wait
        )
        self._update_gauges()

    # -- the pipeline side -------------------------------------------------------------------

    async def write(self, ops: Sequence[Op]) -> None:
        """Spool `ops` in one transaction (one fsync). No `write_batches`: the batcher then writes a
        burst batch by batch, so a burst is never all encoded in memory at once."""
        if self._closing:
            raise RuntimeError("write() after aclose()")
        bodies = [encode_op(op) for op in ops]
        if not bodies:
            return
        if self._spool.orphaned():
            await self._replace_orphaned_spool()
        await self._wait_for_room(sum(map(len, bodies)))
        enqueued_at = _now_ms()
        was_empty = self._spool.ops == 0
        config = self._config
        # Rows cut to what one request carries: the delivery loop sends whole rows as they are.
        append = partial(
            self._spool.append,
            bodies,
            enqueued_at,
            max_ops=config.batch_max_ops,
            max_bytes=config.batch_max_bytes,
        )
        try:
            await anyio.to_thread.run_sync(append)
        except DiskFullError as error:
            await self._append_when_disk_has_room(append, error)
        if was_empty:
            self._head_at = enqueued_at
        self._update_gauges()
        self._wakeup.set()

    async def _replace_orphaned_spool(self) -> None:
        """The state directory was deleted under the daemon: pause input, deliver what the old spool
        holds (its files are still open), then start a new spool where the old one was."""
        log.error(
            "state directory deleted or replaced: input paused until the old spool is delivered, "
            "then a new spool starts there",
            state_dir=str(self._config.state_dir),
            spool_ops=self._spool.ops,
        )
        self._health.set_reason("state_dir_missing", True)
        try:
            while self._spool.ops or self._unconfirmed is not None:
                self._space = anyio.Event()
                self._wakeup.set()
                await self._space.wait()
            old = self._spool
            self._spool = await anyio.to_thread.run_sync(Spool, old.path)
            await anyio.to_thread.run_sync(old.close)
        finally:
            self._health.set_reason("state_dir_missing", False)
        log.info("new spool started", spool=str(self._spool.path))

    async def close_spool(self) -> None:
        await anyio.to_thread.run_sync(self._spool.close)

    async def _append_when_disk_has_room(self, append: Callable[[], None], error: DiskFullError) -> None:
        """A full state volume acts like a full spool: input pauses (deliveries go on, and free
        segments) until the append fits; logged once per incident, `/readyz` 503 `disk_full`."""
        log.error(
            "state volume full: input paused until deliveries or the operator free space",
            error=str(error),
            spool_ops=self._spool.ops,
        )
        self._health.set_reason("disk_full", True)
        try:
            while True:
                if self._input_stopped:
                    raise error  # shutting down: what was read and not spooled cannot be kept
                with anyio.move_on_after(DISK_FULL_RETRY):
                    self._space = anyio.Event()
                    await self._space.wait()
                try:
                    await anyio.to_thread.run_sync(append)
                except DiskFullError as again:
                    error = again
                    continue
                break
        finally:
            self._health.set_reason("disk_full", False)
        log.info("state volume has room again: input resumed", spool_ops=self._spool.ops)

    async def _wait_for_room(self, size: int) -> None:
        """Backpressure: block (the daemon stops reading input) until the spool has room.

        An empty spool always takes the write, so one write larger than the cap cannot deadlock.
        """
        cap = self._config.spool_max_bytes
        if self._spool.ops == 0 or self._spool.total_bytes + size <= cap or self._input_stopped:
            return
        log.warning(
            "spool full: input paused until Convex catches up",
            spool_bytes=self._spool.total_bytes,
            spool_max_bytes=cap,
            spool_ops=self._spool.ops,
        )
        self._health.set_reason("spool_full", True)
        try:
            while self._spool.ops > 0 and self._spool.total_bytes + size > cap and not self._input_stopped:
                self._space = anyio.Event()
                await self._space.wait()
        finally:
            self._health.set_reason("spool_full", False)
        log.info("spool has room again: input resumed", spool_bytes=self._spool.total_bytes)

    def input_stopped(self) -> None:
        self._input_stopped = True
        self._space.set()

    async def aclose(self) -> None:
        """Deliver what the flush deadline allows; the rest stays spooled for the next start."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        with anyio.move_on_after(self._config.flush_timeout):
            await self._drained.wait()
        if self._spool.ops:
            log.warning(
                "flush deadline reached: undelivered ops stay in the spool for the next start",
                spool_ops=self._spool.ops,
                flush_timeout=self._config.flush_timeout,
                spool=str(self._spool.path),
            )
        self._closed = True

    def leftover(self) -> Leftover | None:
        if not self._closed or self._spool.ops == 0:
            return None
        return Leftover(self._spool.ops, self._config.state_dir, self._incident)

    # -- the delivery side -------------------------------------------------------------------

    async def run(self) -> None:
        """The delivery loop: returns once closing and drained (or is cancelled by the owner).

        Pipelined: while a request is on its way, one trip to the worker thread confirms the batch
        delivered before it (the spool forgets it) and, during a backlog, reads the next one, so the
        next request leaves as soon as this one is answered. Requests still go one at a time, in
        spool order; a batch is confirmed only once it is settled. A crash before a confirmation
        is written sends that batch again, which the keys make harmless.
        """
        try:
            while (batch := await self._next_batch()) is not None:
                last, enqueued_at = batch.last, batch.enqueued_at
                self._delivering_at = enqueued_at
                self._dead_lettered = False
                if batch.count == 1 and batch.size > self._config.batch_max_bytes:
                    # Staging reads the op from the spool again: dropping this copy first keeps the
                    # memory for a huge op at about two copies of it (parsed, one column encoded).
                    del batch
                    await self._confirm_pending()
                    await self._deliver_staged(self._head)
                else:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._confirm_pending_and_read_next, last)
                        await self._deliver(batch)
                    del batch
                # A confirmation after dead letters is durable: a power cut must not dead-letter
                # those ops twice. Otherwise losing it costs a harmless re-send, not an fsync each.
                self._unconfirmed = (last, self._dead_lettered)
                self._delivering_at = None
                self._metrics.delivery_latency.observe(max(0.0, (_now_ms() - enqueued_at) / 1000))
        finally:
            with anyio.CancelScope(shield=True):
                await self._confirm_pending()
            # Also on a crash of the loop: aclose() must not wait out its deadline for nothing.
            self._drained.set()

    def _oldest_undelivered_age(self) -> float:
        """(Read by the metrics thread.)"""
        since = self._delivering_at
        return 0.0 if since is None else max(0.0, (_now_ms() - since) / 1000)

    def _due_now(self) -> bool:
        """Whether the spool holds a full batch (or is being flushed): no reason to wait for more."""
        config = self._config
        return (
            self._closing
            or self._spool.ops >= config.batch_max_ops
            or self._spool.total_bytes >= config.batch_max_bytes
        )

    async def _confirm_pending(self) -> None:
        """Forget the batch delivered last, if that is still to be done."""
        if self._unconfirmed is None:
            return
        (last, durable), self._unconfirmed = self._unconfirmed, None
        await anyio.to_thread.run_sync(partial(self._spool.delete_through, last, durable=durable))
        self._confirmed()

    def _confirmed(self) -> None:
        self._head_at = None
        self._update_gauges()
        self._space.set()

    async def _confirm_pending_and_read_next(self, last: int) -> None:
        """(While the batch ending at op `last` is being sent.) Confirm the one before it; read the
        batch after it if it is due already (full, or the spool is being flushed)."""
        pending, self._unconfirmed = self._unconfirmed, None
        self._next = await anyio.to_thread.run_sync(
            self._confirm_and_peek_after, pending, last, self._closing
        )
        if pending is not None:
            self._confirmed()

    def _confirm_and_peek_after(
        self, pending: tuple[int, bool] | None, last: int, flushing: bool
    ) -> Batch | None:
        """(In the worker thread.)"""
        if pending is not None:
            self._spool.delete_through(pending[0], durable=pending[1])
        config = self._config
        return self._spool.peek_batch(
            config.batch_max_ops, config.batch_max_bytes, after=last, full=not flushing
        )

    async def _next_batch(self) -> Batch | None:
        """Wait until a batch is due (count, size, or age of its oldest op), then read it."""
        config = self._config
        if self._next is not None:
            ready, self._next = self._next, None
            return ready
        await self._confirm_pending()
        while True:
            self._wakeup = anyio.Event()
            if self._spool.ops == 0:
                if self._closing:
                    return None
                await self._wakeup.wait()
                continue
            if not self._due_now():
                if self._head_at is None:
                    self._head_at = await anyio.to_thread.run_sync(self._spool.head_enqueued_at)
                remaining = ((self._head_at or 0) - _now_ms()) / 1000 + config.batch_max_age
                if remaining > 0:
                    with anyio.move_on_after(remaining):
                        await self._wakeup.wait()
                    continue
            batch = await anyio.to_thread.run_sync(
                self._spool.peek_batch, config.batch_max_ops, config.batch_max_bytes
            )
            if batch is not None:
                return batch

    async def _deliver(self, batch: Batch) -> None:
        """Apply `batch` or dead-letter the ops Convex refuses; returns when each is settled.

        The request is the spooled rows joined as they are (no op is decoded or encoded again);
        only a refused batch is split into its ops, to be bisected.
        """
        try:
            results = await self._send_parts(batch.parts, batch.count)
        except RejectedError as exc:
            first, ops = batch.first, batch.ops()
            del batch
            await self._bisect(first, ops, exc)
            return
        split: list[list[bytes]] = []

        def body_of(index: int) -> bytes:
            if not split:
                split.append(batch.ops())
            return split[0][index]

        await self._settle_results(results, body_of)

    async def _deliver_ops(self, first: int, bodies: list[bytes]) -> None:
        """`_deliver` for ops already split (part of a refused batch); `first`: the first op's number."""
        try:
            results = await self._send(bodies)
        except RejectedError as exc:
            await self._bisect(first, bodies, exc)
            return
        await self._settle_results(results, bodies.__getitem__)

    async def _bisect(self, first: int, bodies: list[bytes], exc: RejectedError) -> None:
        """Settle `bodies`, which Convex refused together: alone, or each half on its own."""
        if len(bodies) == 1:
            await self._settle_alone(bodies[0], exc)
            return
        log.warning("batch rejected: bisecting to isolate the offending ops", ops=len(bodies), error=str(exc))
        middle = len(bodies) // 2
        await self._deliver_ops(first, bodies[:middle])
        # The settled half is confirmed at once: after a crash from here on, it is not sent again.
        await self._confirm(first + middle - 1)
        await self._deliver_ops(first + middle, bodies[middle:])

    async def _confirm(self, last: int) -> None:
        """Forget the ops through op number `last`: applied or dead-lettered."""
        await anyio.to_thread.run_sync(self._spool.delete_through, last)
        self._update_gauges()
        self._space.set()

    async def _settle_results(self, results: list[dict[str, Any]], body_of: Callable[[int], bytes]) -> None:
        """Count the per-op results; dead-letter the ops the mutation reports `rejected`."""
        counts = Counter(result.get("status", "unknown") for result in results)
        self.counts.update(counts)
        if "rejected" in counts:
            for index, result in enumerate(results):
                if result.get("status") == "rejected":
                    reason = str(result.get("reason", ""))
                    await self._dead_letter([body_of(index)], cause="rejected", reason=reason)
        for status, count in counts.items():
            if status != "rejected":
                self._metrics.ops_delivered.labels(result=str(status)).inc(count)

    async def _settle_alone(self, body: bytes, exc: RejectedError) -> None:
        """One op refused on its own: staged if refused for its size, else dead-lettered."""

        async def load() -> bytes:
            return body

        if _TOO_LARGE.search(str(exc)):
            await self._deliver_staged(load)
        else:
            await self._dead_letter([body], cause="rejected", reason=str(exc))

    async def _deliver_staged(self, load: Callable[[], Awaitable[bytes]]) -> None:
        """Deliver one op too large for a batch by staging its large columns first. `load` reads the
        op (again: it is not kept while its columns are staged, nor to dead-letter it whole)."""
        while True:
            op = orjson.loads(await load())
            args: dict[str, Any] = op["args"]
            try:
                staged = [
                    ref
                    for field in STAGEABLE.get(op["op"], ())
                    if (ref := await self._stage(op["key"], field, args)) is not None
                ]
                if staged:
                    args["staged"] = staged
                apply_body = orjson.dumps(op)
                del op, args
                [result] = await self._send([apply_body])
            except RejectedError as exc:
                if _STAGED_PARTS_MISSING not in str(exc):
                    await self._dead_letter([await load()], cause="rejected", reason=str(exc))
                    return
                # A part went missing after it was staged (convex/lib/stages.ts says when): stage again.
                log.warning("staged parts missing when applying: staging again", error=str(exc))
                self._metrics.retries.labels(cause="staged_parts_missing").inc()
                await anyio.sleep(min(1.0, self._config.retry_max_wait))
                continue
            status = str(result.get("status", "unknown"))
            if status == "rejected":
                reason = str(result.get("reason", ""))
                await self._dead_letter([await load()], cause="rejected", reason=reason)
            else:
                self._metrics.ops_delivered.labels(result=status).inc()
            return

    async def _stage(self, op_key: str, field: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """Uploads `args[field]` in parts and removes it from `args`; its reference for `args.staged`.

        None when the column is absent or small enough to stay inline. The stage key derives from
        the op key, the column and the value, so the same op staged again (after a retry, a restart,
        or in a replay) finds its parts already there.
        """
        value = args.get(field)
        if value is None:
            return None
        if isinstance(value, str):
            if len(value) <= STAGE_MIN_BYTES:  # UTF-8 takes at most 4 bytes per character: stays inline
                return None
            text, json = value.encode(), False
        else:
            text, json = orjson.dumps(value), True
            if len(text) <= STAGE_MIN_BYTES:
                return None
        del args[field], value
        stage_key = make_key("s", op_key, field, hashlib.blake2b(text, digest_size=16).hexdigest())
        bounds = _utf8_parts(text, STAGE_PART_BYTES)
        for part, (start, end) in enumerate(bounds):
            data = {"stageKey": stage_key, "field": field, "part": part, "data": text[start:end].decode()}
            await self._call(STAGE_PART, orjson.dumps(data))
        log.info("staged a large value", field=field, bytes=len(text), parts=len(bounds), stage_key=stage_key)
        return {"field": field, "json": json, "parts": len(bounds), "stageKey": stage_key}

    async def _head(self) -> bytes:
        """The op at the head of the spool (it holds the op being delivered: never empty here)."""
        batch = await anyio.to_thread.run_sync(self._spool.peek_batch, 1, 0)
        if batch is None:
            raise RuntimeError("spool: the op being delivered is gone")
        return batch.ops()[0]

    async def _send(self, bodies: list[bytes]) -> list[dict[str, Any]]:
        """One `ingest:applyBatch` call, retried until it is answered (or deterministically refused)."""
        return await self._send_parts(bodies, len(bodies))

    async def _send_parts(self, parts: Sequence[bytes], count: int) -> list[dict[str, Any]]:
        """`_send` for `count` ops as spooled rows: each the ops joined by `spool.SEP`,
        which is valid between JSON array items too. The request body is built in one copy."""
        pieces = [b'{"ops":[']
        for part in parts:
            pieces += (part, SEP)
        pieces[-1] = b"]}"
        body = envelope(APPLY_BATCH, pieces)
        del pieces
        length = len(body)
        value = await self._call(APPLY_BATCH, body, enveloped=True)
        self._metrics.batch_ops.observe(count)
        self._metrics.batch_bytes.observe(length)
        return _results(value, count)

    async def _call(self, path: str, args: bytes, *, enveloped: bool = False) -> Any:
        """One mutation, retried until it is answered (or deterministically refused). `args` is the
        arguments' JSON, or with `enveloped` the whole request body (`convex_api.envelope`)."""
        body = args if enveloped else envelope(path, [args])
        del args
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((TransientError, AuthError, ConfigError)),
            wait=self._wait,
            stop=stop_never,
            sleep=anyio.sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                started = time.perf_counter()
                value = await self._api.call_body("mutation", path, body)
                self._metrics.request_seconds.observe(time.perf_counter() - started)
        self._end_incident()
        return value

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, (AuthError, ConfigError)):
            return self._config.auth_retry_wait
        backoff = self._backoff(state)
        if isinstance(error, TransientError) and error.retry_after is not None:
            return max(backoff, min(error.retry_after, self._config.retry_max_wait))
        return backoff

    def _before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self._delivery_failed()
        if isinstance(error, (AuthError, ConfigError)):
            kind = "auth" if isinstance(error, AuthError) else "config"
            self._metrics.retries.labels(cause=kind).inc()
            if self._incident != kind:
                if self._incident is not None:
                    self._health.set_reason("convex_" + self._incident, False)
                self._incident = kind
                self._health.set_reason("convex_" + kind, True)
                hint = (
                    "check CONVEX_DEPLOY_KEY / CONVEX_ADMIN_KEY / --convex-key-file for this deployment"
                    if kind == "auth"
                    else "deploy the convex/ functions to this deployment (npx convex deploy)"
                )
                log.error(
                    "convex refused the request: ops stay spooled and are retried; fix: " + hint,
                    url=self._api.url,
                    error=str(error),
                    retry_every_s=wait,
                )
            return
        cause = error.cause if isinstance(error, TransientError) else "unknown"
        self._metrics.retries.labels(cause=cause).inc()
        log.warning(
            "convex call failed, will retry",
            attempt=state.attempt_number,
            wait_s=round(wait, 3),
            error=str(error),
        )

    def _delivery_failed(self) -> None:
        """Count a failed call; not ready once calls have failed for `unready_after` seconds."""
        self._failures += 1
        self._metrics.delivery_failures.set(self._failures)
        if self._failures == 1:
            self._health.set_reason_from("delivery_failing", time.monotonic() + self._config.unready_after)

    def _end_incident(self) -> None:
        if self._failures:
            self._failures = 0
            self._metrics.delivery_failures.set(0)
            self._health.set_reason("delivery_failing", False)
        if self._incident is not None:
            log.info("convex accepts requests again", incident=self._incident)
            self._health.set_reason("convex_" + self._incident, False)
            self._incident = None

    async def _dead_letter(self, bodies: list[bytes], *, cause: str, reason: str) -> None:
        """Append each op with why it was refused to the dead-letter JSONL file (fsynced)."""
        at = _now_ms()
        lines = b"".join(
            orjson.dumps(
                {"deadLetteredAt": at, "cause": cause, "reason": reason, "op": orjson.Fragment(body)}
            )
            + b"\n"
            for body in bodies
        )
        await anyio.to_thread.run_sync(_append_fsync, self._dead_letter_path, lines)
        self._dead_lettered = True
        self._metrics.dead_letters.labels(cause=cause).inc(len(bodies))
        for body in bodies:
            log.error(
                "op dead-lettered",
                cause=cause,
                reason=reason,
                op=_op_label(body),
                file=str(self._dead_letter_path),
            )

    def _update_gauges(self) -> None:
        self._metrics.spool_ops.set(self._spool.ops)
        self._metrics.spool_bytes.set(self._spool.total_bytes)


def _results(value: Any, count: int) -> list[dict[str, Any]]:
    """The per-op results `ingest:applyBatch` returns: a list, one `{status, reason?}` per op."""
    if isinstance(value, list) and len(value) == count and all(isinstance(r, dict) for r in value):
        return value
    # The batch committed (Convex answered success) but says nothing usable about each op: count it
    # delivered rather than re-send it forever.
    log.error("ingest:applyBatch returned an unexpected value; counting the batch delivered", ops=count)
    return [{"status": "unknown"}] * count


def _utf8_parts(text: bytes, size: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive slices of UTF-8 `text`, each at most `size` bytes, never
    splitting a character (so never a surrogate pair in Convex's UTF-16 strings either)."""
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        while end < len(text) and text[end] & 0xC0 == 0x80:  # a continuation byte: back off
            end -= 1
        bounds.append((start, end))
        start = end
    return bounds


def _op_label(body: bytes) -> str:
    """`op key` for logs, without the (possibly huge) arguments."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    return f"{parsed.get('op')} {parsed.get('key')}"


def _append_fsync(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the state directory may have been deleted
    # Refused ops hold prompts and command output: the daemon's user's only.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600), "ab") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


@asynccontextmanager
async def open_convex_sink(
    api: ConvexHttp,
    config: ConvexSinkConfig,
    *,
    metrics: Metrics = METRICS,
    health: Health = HEALTH,
) -> AsyncIterator[ConvexSink]:
    """The sink with its delivery loop running; on exit: flush (bounded by the deadline), close."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    spool = await anyio.to_thread.run_sync(Spool, config.state_dir / spool_module.FILENAME)
    if spool.quarantined_ops:
        metrics.spool_quarantined.labels(what="ops").inc(spool.quarantined_ops)
    if spool.quarantined_index:
        metrics.spool_quarantined.labels(what="index").inc()
    if spool.ops:
        log.info("spool has undelivered ops from a previous run: delivering them first", spool_ops=spool.ops)
    sink = ConvexSink(api, spool, config, metrics=metrics, health=health)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            try:
                yield sink
            finally:
                with anyio.CancelScope(shield=True):
                    await sink.aclose()
                tg.cancel_scope.cancel()
    finally:
        await api.aclose()
        await sink.close_spool()


class ConvexHistory:
    """The `HistoryReader` behind `ingestor show --sink convex`: the `history:*` queries.

    Results as the queries return them, numbers in the readers' one form (`json_numbers`: orjson
    parses an integral float64 past 64 bits, which Convex writes in digits, as a float).
    """

    PAGE_SIZE: Final = 200

    def __init__(self, api: ConvexHttp) -> None:
        self._api = api

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        return _optional_dict(
            await self._api.query("history:getConversation", {"conversationId": conversation_id})
        )

    async def get_turn(self, turn_id: str) -> dict[str, Any] | None:
        return _optional_dict(await self._api.query("history:getTurn", {"turnId": turn_id}))

    async def get_command_output(self, call_id: str) -> dict[str, Any] | None:
        return _optional_dict(await self._api.query("history:getCommandOutput", {"callId": call_id}))

    async def list_events(self, conversation_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Every event (or the first `limit`), following Convex pagination cursors to the end."""
        events: list[dict[str, Any]] = []
        cursor: str | None = None
        while limit is None or len(events) < limit:
            page = await self._api.query(
                "history:listEvents",
                {
                    "conversationId": conversation_id,
                    "paginationOpts": {"numItems": self.PAGE_SIZE, "cursor": cursor},
                },
            )
            events.extend(json_numbers(page["page"]))
            if page["isDone"]:
                break
            cursor = page["continueCursor"]
        return events if limit is None else events[:limit]

    async def list_conversations(
        self, cursor: str | None, count: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await self._page("summaries:listConversations", cursor, count)

    async def list_usage(self, cursor: str | None, count: int) -> tuple[list[dict[str, Any]], str | None]:
        return await self._page("summaries:listUsage", cursor, count)

    async def _page(
        self, name: str, cursor: str | None, count: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        page = await self._api.query(name, {"paginationOpts": {"numItems": count, "cursor": cursor}})
        return json_numbers(page["page"]), None if page["isDone"] else page["continueCursor"]

    async def aclose(self) -> None:
        await self._api.aclose()


def _optional_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        result: dict[str, Any] = json_numbers(value)
        return result
    raise TypeError(f"expected an object or null from Convex, got {type(value).__name__}")


# -- the factories `ingestor.sinks.factory` calls -------------------------------------------------


def _deployment(env: Mapping[str, str], options: Mapping[str, Any]) -> Deployment:
    try:
        deployment = resolve_deployment(
            env, url_flag=options.get("convex_url"), key_file=options.get("convex_key_file")
        )
    except DeploymentError as error:
        raise SinkError(str(error)) from None
    if deployment.key is not None:
        redact(deployment.key.reveal())
    log.info(
        "convex deployment",
        url=deployment.url,
        url_from=deployment.url_source,
        key_from=deployment.key_source or "none",
    )
    if deployment.key is None and urlsplit(deployment.url).hostname not in _LOOPBACK:
        log.warning(
            "no convex key configured: ingest:applyBatch is internal and needs one on a real deployment "
            "(--convex-key-file, " + ", ".join(KEY_VARIABLES) + ")"
        )
    return deployment


def sink_config(env: Mapping[str, str], options: Mapping[str, Any]) -> ConvexSinkConfig:
    """The sink's settings from CLI options (argparse names); absent ones take the defaults."""
    values: dict[str, Any] = {"state_dir": options.get("state_dir") or default_state_dir(env)}
    for name in ("batch_max_ops", "batch_max_bytes", "spool_max_bytes", "flush_timeout", "unready_after"):
        if options.get(name) is not None:
            values[name] = options[name]
    if options.get("batch_max_age_ms") is not None:
        values["batch_max_age"] = options["batch_max_age_ms"] / 1000
    try:
        return ConvexSinkConfig(**values)
    except ValueError as error:
        raise SinkError(f"convex sink: {error}") from None


@asynccontextmanager
async def open_sink_from_env(
    env: Mapping[str, str], options: Mapping[str, Any] | None = None
) -> AsyncIterator[ConvexSink]:
    """The Convex sink for `ingestor run|replay --sink convex`."""
    options = options or {}
    config = sink_config(env, options)
    deployment = _deployment(env, options)
    log.info("convex spool", state_dir=str(config.state_dir))
    async with open_convex_sink(ConvexHttp(deployment.url, deployment.key), config) as sink:
        yield sink


@asynccontextmanager
async def open_history_from_env(
    env: Mapping[str, str], options: Mapping[str, Any] | None = None
) -> AsyncIterator[ConvexHistory]:
    """The Convex history reader for `ingestor show --sink convex`."""
    deployment = _deployment(env, options or {})
    history = ConvexHistory(ConvexHttp(deployment.url, deployment.key, acting_as=ADMIN_IDENTITY))
    try:
        yield history
    finally:
        await history.aclose()
