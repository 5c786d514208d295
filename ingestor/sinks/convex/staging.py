"""Staging: the large columns of an op too large for one call, uploaded part by part before the op.

An op larger than a batch may carry (`batch_max_bytes`) is delivered alone and staged: its large
columns are uploaded first, part by part (`ingest:stageBlobPart`, each part its own retried,
idempotent request), then the op is applied with references to them (docs/operations.md, "Values
larger than one call"). It stays spooled until that last call is confirmed; the stage keys derive
from the op, so staging again after a crash or a retry finds the parts already there. A smaller op
that Convex still refuses alone as too large (it counts sizes its own way) is staged the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import anyio
import orjson

from ingestor.logging import get_logger
from ingestor.ops import make_key
from ingestor.sinks.convex.calls import Caller
from ingestor.sinks.convex.client import RejectedError
from ingestor.sinks.convex.config import ConvexSinkConfig

log = get_logger("ingestor.sinks.convex")

DeadLetter = Callable[..., Awaitable[None]]
"""The sink's: `dead_letter(bodies, cause=..., reason=...)`."""

# The ConvexError code of an op whose staged parts are not all there (convex/lib/stages.ts).
_STAGED_PARTS_MISSING: Final = "StagedPartsMissing"
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


async def stage(caller: Caller, op_key: str, field: str, args: dict[str, Any]) -> dict[str, Any] | None:
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
        await caller.call(STAGE_PART, orjson.dumps(data))
    log.info("staged a large value", field=field, bytes=len(text), parts=len(bounds), stage_key=stage_key)
    return {"field": field, "json": json, "parts": len(bounds), "stageKey": stage_key}


# A lone op refused for its size (our `BatchTooLarge`, or Convex's own argument limit): Convex counts
# sizes its own way (a number is 9 bytes), so an op under the batch budget in JSON may still be.
_TOO_LARGE: Final = re.compile(r"BatchTooLarge|too large", re.IGNORECASE)


def refused_for_size(error: RejectedError) -> bool:
    return _TOO_LARGE.search(str(error)) is not None


async def deliver_staged(
    caller: Caller, load: Callable[[], Awaitable[bytes]], dead_letter: DeadLetter, config: ConvexSinkConfig
) -> None:
    """Deliver one op too large for a batch by staging its large columns first. `load` reads the
    op (again: it is not kept while its columns are staged, nor to dead-letter it whole)."""
    while True:
        op = orjson.loads(await load())
        args: dict[str, Any] = op["args"]
        try:
            staged = [
                ref
                for field in STAGEABLE.get(op["op"], ())
                if (ref := await stage(caller, op["key"], field, args)) is not None
            ]
            if staged:
                args["staged"] = staged
            apply_body = orjson.dumps(op)
            del op, args
            [result] = await caller.apply_batch([apply_body], 1)
        except RejectedError as exc:
            if _STAGED_PARTS_MISSING not in str(exc):
                await dead_letter([await load()], cause="rejected", reason=str(exc))
                return
            # A part went missing after it was staged (convex/lib/stages.ts says when): stage again.
            log.warning("staged parts missing when applying: staging again", error=str(exc))
            caller.metrics.retries.labels(cause="staged_parts_missing").inc()
            await anyio.sleep(min(1.0, config.retry_max_wait))
            continue
        status = str(result.get("status", "unknown"))
        if status == "rejected":
            reason = str(result.get("reason", ""))
            await dead_letter([await load()], cause="rejected", reason=reason)
        else:
            caller.metrics.ops_delivered.labels(result=status).inc()
        return


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
