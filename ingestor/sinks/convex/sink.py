"""The Convex sink: spool every op durably, deliver from the spool in FIFO batches, exactly once.

`write()` returns once the ops are in the spool (see ingestor/sinks/convex/spool.py). One delivery loop
reads batches back in arrival order, so writes for a conversation reach Convex in order, and calls
`ingest:applyBatch` (one transaction per batch; every op has a deterministic key and the mutation
skips keys it already applied, so re-sending after a lost response or a crash is harmless).

Failures (retried in ingestor/sinks/convex/calls.py):
- transient (network, timeout, 408, 429, 5xx): retried with jittered exponential backoff, forever;
  the spool absorbs the input meanwhile and `write()` blocks when it reaches its cap.
- auth (401/403) or a missing function: logged once per incident, not ready, retried slowly.
- rejected (400, or `status:"error"`): nothing was applied; the batch is bisected until the
  offending ops are alone, the rest is delivered, and each offender goes to the dead-letter file.
  This also copes with batches that exceed a transaction limit (they succeed once halved).
- per-op `rejected` results: the rest of the batch applied; offenders go to the dead-letter file.

An op larger than a batch may carry (`batch_max_bytes`), or refused alone as too large, is
delivered alone and staged (ingestor/sinks/convex/staging.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final

import anyio
import anyio.to_thread

from ingestor.logging import get_logger
from ingestor.metrics import HEALTH, METRICS, Health, Metrics
from ingestor.ops import Op
from ingestor.sinks.base import Leftover
from ingestor.sinks.convex.calls import Caller
from ingestor.sinks.convex.client import ConvexHttp, RejectedError
from ingestor.sinks.convex.config import ConvexSinkConfig
from ingestor.sinks.convex.dead_letter import DEAD_LETTER_FILE, DeadLetters
from ingestor.sinks.convex.spool import Spool
from ingestor.sinks.convex.spool_batch import Batch
from ingestor.sinks.convex.spool_disk import DiskFullError
from ingestor.sinks.convex.staging import deliver_staged, refused_for_size
from ingestor.sinks.wire import encode_op

DISK_FULL_RETRY: Final = 1.0
"""Seconds between appends tried on a full state volume when no delivery frees room meanwhile."""
log = get_logger("ingestor.sinks.convex")


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
        self._caller = Caller(api, config, metrics=metrics, health=health)
        self._spool = spool
        self._config = config
        self._metrics = metrics
        self.counts: Counter[str] = Counter()
        """Delivered operations by result (inserted, updated, duplicate, rejected), for the run's summary."""
        self._health = health
        self._dead_letters = DeadLetters(config.state_dir / DEAD_LETTER_FILE, metrics)
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
        self._delivering_at: int | None = None
        """When the batch being delivered was spooled (epoch ms); None between batches."""
        metrics.oldest_undelivered_age.set_function(self._oldest_undelivered_age)
        self._update_gauges()

    # -- the pipeline side -------------------------------------------------------------------

    async def write(self, ops: Sequence[Op]) -> None:
        """Spool `ops` in one transaction (one fsync)."""
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

    async def write_batches(self, batches: Sequence[Sequence[Op]]) -> None:
        """Batch by batch, so that a burst is never all encoded in memory at once."""
        for ops in batches:
            await self.write(ops)

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
        return Leftover(self._spool.ops, self._config.state_dir, self._caller.incident)

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
                    await deliver_staged(self._caller, self._head, self._dead_letter, self._config)
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
            results = await self._caller.apply_batch(batch.parts, batch.count)
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
            results = await self._caller.apply_batch(bodies, len(bodies))
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

        if refused_for_size(exc):
            await deliver_staged(self._caller, load, self._dead_letter, self._config)
        else:
            await self._dead_letter([body], cause="rejected", reason=str(exc))

    async def _head(self) -> bytes:
        """The op at the head of the spool (it holds the op being delivered: never empty here)."""
        batch = await anyio.to_thread.run_sync(self._spool.peek_batch, 1, 0)
        if batch is None:
            raise RuntimeError("spool: the op being delivered is gone")
        return batch.ops()[0]

    async def _dead_letter(self, bodies: list[bytes], *, cause: str, reason: str) -> None:
        await self._dead_letters.append(bodies, cause=cause, reason=reason)
        self._dead_lettered = True

    def _update_gauges(self) -> None:
        self._metrics.spool_ops.set(self._spool.ops)
        self._metrics.spool_bytes.set(self._spool.total_bytes)
