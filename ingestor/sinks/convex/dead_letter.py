"""The dead-letter file: the ops Convex refuses for good, each with why, for an operator to look at."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread
import orjson

from ingestor.logging import get_logger
from ingestor.metrics import Metrics

log = get_logger("ingestor.sinks.convex")

DEAD_LETTER_FILE: Final = "dead-letter.jsonl"


class DeadLetters:
    def __init__(self, path: Path, metrics: Metrics) -> None:
        self.path = path
        self._metrics = metrics

    async def append(self, bodies: list[bytes], *, cause: str, reason: str) -> None:
        """Append each op with why it was refused to the dead-letter JSONL file (fsynced)."""
        at = _now_ms()
        lines = b"".join(
            orjson.dumps(
                {"deadLetteredAt": at, "cause": cause, "reason": reason, "op": orjson.Fragment(body)}
            )
            + b"\n"
            for body in bodies
        )
        await anyio.to_thread.run_sync(_append_fsync, self.path, lines)
        self._metrics.dead_letters.labels(cause=cause).inc(len(bodies))
        for body in bodies:
            log.error(
                "op dead-lettered",
                cause=cause,
                reason=reason,
                op=_op_label(body),
                file=str(self.path),
            )


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


def _now_ms() -> int:
    return int(time.time() * 1000)
