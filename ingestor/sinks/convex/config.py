"""The Convex sink's settings, and the limits of the `ingest:applyBatch` call they must keep within."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ingestor.errors import SinkError
from ingestor.logging import get_logger
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


def sink_config(env: Mapping[str, str], options: Mapping[str, Any]) -> ConvexSinkConfig:
    """The sink's settings from CLI options (argparse names); absent ones take the defaults."""
    values: dict[str, Any] = {"state_dir": options.get("state_dir") or _default_state_dir(env)}
    for name in ("batch_max_ops", "batch_max_bytes", "spool_max_bytes", "flush_timeout", "unready_after"):
        if options.get(name) is not None:
            values[name] = options[name]
    if options.get("batch_max_age_ms") is not None:
        values["batch_max_age"] = options["batch_max_age_ms"] / 1000
    try:
        return ConvexSinkConfig(**values)
    except ValueError as error:
        raise SinkError(f"convex sink: {error}") from None
