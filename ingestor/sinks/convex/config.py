"""The Convex sink's settings, and the limits of the `ingest:applyBatch` call they must keep within."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from ingestor.errors import SinkError
from ingestor.logging import get_logger
from ingestor.sinks.convex.deployment import ConvexOptions
from ingestor.sinks.locations import default_state_dir, user_state_dir

log = get_logger("ingestor.sinks.convex")

MIB: Final = 1024 * 1024
# What `ingest:applyBatch` accepts per call (convex/lib/limits.ts: MAX_BATCH_OPS, MAX_BATCH_BYTES),
# which keeps under Convex's own ceilings (8,192 array items, 16 MiB of arguments, 16 MiB written
# per transaction). Our JSON bytes approximate Convex's value size; a batch that is still refused
# as too large is bisected like any rejected batch.
APPLY_BATCH_MAX_OPS: Final = 2000
APPLY_BATCH_MAX_BYTES: Final = 8 * MIB


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


def _default_state_dir(env: Mapping[str, str]) -> Path:
    state = default_state_dir(env)
    if state.legacy:
        log.warning("using the spool in ./.ingestor-state: " + state.moved_hint(user_state_dir()))
    return state.path


_T = TypeVar("_T")


def sink_config(env: Mapping[str, str], options: ConvexOptions) -> ConvexSinkConfig:
    """The sink's settings from its command-line options; those not given take the defaults."""
    default = ConvexSinkConfig
    try:
        return ConvexSinkConfig(
            state_dir=options.state_dir or _default_state_dir(env),
            batch_max_ops=_given(options.batch_max_ops, default.batch_max_ops),
            batch_max_bytes=_given(options.batch_max_bytes, default.batch_max_bytes),
            batch_max_age=_given(options.batch_max_age, default.batch_max_age),
            spool_max_bytes=_given(options.spool_max_bytes, default.spool_max_bytes),
            flush_timeout=_given(options.flush_timeout, default.flush_timeout),
            unready_after=_given(options.unready_after, default.unready_after),
        )
    except ValueError as error:
        raise SinkError(f"convex sink: {error}") from None


def _given(value: _T | None, default: _T) -> _T:
    return default if value is None else value
