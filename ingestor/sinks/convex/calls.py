"""One Convex mutation, retried until it is answered, and the incidents its failures make.

Failures (classified in ingestor/sinks/convex/client.py): transient ones (network, timeout, 408, 429,
5xx) are retried with jittered exponential backoff, forever; auth (401/403) or a missing function
is logged once per incident, makes the daemon not ready, and is retried slowly. A rejection
(`RejectedError`) is not retried: it goes back to the caller.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_random_exponential,
)

from ingestor.logging import get_logger
from ingestor.metrics import Health, Metrics
from ingestor.sinks.convex.client import AuthError, ConfigError, ConvexHttp, TransientError, envelope
from ingestor.sinks.convex.config import ConvexSinkConfig
from ingestor.sinks.convex.spool_batch import SEP

log = get_logger("ingestor.sinks.convex")

APPLY_BATCH: Final = "ingest:applyBatch"


class Caller:
    def __init__(
        self, api: ConvexHttp, config: ConvexSinkConfig, *, metrics: Metrics, health: Health
    ) -> None:
        self._api = api
        self._config = config
        self.metrics = metrics
        self._health = health
        self.incident: str | None = None
        """"auth" or "config" while such a failure lasts."""
        self._failures = 0
        """Failed calls since the last answered one."""
        # Full jitter: a random wait up to initial * 2^attempt (capped), so restarted daemons spread out.
        self._backoff = wait_random_exponential(
            multiplier=config.retry_initial_wait, max=config.retry_max_wait
        )

    async def call(self, path: str, args: bytes, *, enveloped: bool = False) -> Any:
        """One mutation, retried until it is answered (or deterministically refused). `args` is the
        arguments' JSON, or with `enveloped` the whole request body (`client.envelope`)."""
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
                self.metrics.request_seconds.observe(time.perf_counter() - started)
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
            self.metrics.retries.labels(cause=kind).inc()
            if self.incident != kind:
                if self.incident is not None:
                    self._health.set_reason("convex_" + self.incident, False)
                self.incident = kind
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
        self.metrics.retries.labels(cause=cause).inc()
        log.warning(
            "convex call failed, will retry",
            attempt=state.attempt_number,
            wait_s=round(wait, 3),
            error=str(error),
        )

    def _delivery_failed(self) -> None:
        """Count a failed call; not ready once calls have failed for `unready_after` seconds."""
        self._failures += 1
        self.metrics.delivery_failures.set(self._failures)
        if self._failures == 1:
            self._health.set_reason_from("delivery_failing", time.monotonic() + self._config.unready_after)

    def _end_incident(self) -> None:
        if self._failures:
            self._failures = 0
            self.metrics.delivery_failures.set(0)
            self._health.set_reason("delivery_failing", False)
        if self.incident is not None:
            log.info("convex accepts requests again", incident=self.incident)
            self._health.set_reason("convex_" + self.incident, False)
            self.incident = None

    async def apply_batch(self, parts: Sequence[bytes], count: int) -> list[dict[str, Any]]:
        """One `ingest:applyBatch` call, retried until it is answered (or deterministically refused),
        for `count` ops as spooled rows: each the ops joined by `spool.SEP` (or one op each), which
        is valid between JSON array items too. The request body is built in one copy."""
        pieces = [b'{"ops":[']
        for part in parts:
            pieces += (part, SEP)
        pieces[-1] = b"]}"
        body = envelope(APPLY_BATCH, pieces)
        del pieces
        length = len(body)
        value = await self.call(APPLY_BATCH, body, enveloped=True)
        self.metrics.batch_ops.observe(count)
        self.metrics.batch_bytes.observe(length)
        return _results(value, count)


def _results(value: Any, count: int) -> list[dict[str, Any]]:
    """The per-op results `ingest:applyBatch` returns: a list, one `{status, reason?}` per op."""
    if isinstance(value, list) and len(value) == count and all(isinstance(r, dict) for r in value):
        return value
    # The batch committed (Convex answered success) but says nothing usable about each op: count it
    # delivered rather than re-send it forever.
    log.error("ingest:applyBatch returned an unexpected value; counting the batch delivered", ops=count)
    return [{"status": "unknown"}] * count
