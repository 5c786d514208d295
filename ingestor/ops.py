"""The operations every sink applies: see docs/operations.md (the contract).

Pure data and pure functions only: no I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final, Literal, TypedDict

import orjson

OpName = Literal[
    "upsertConversation",
    "upsertTurn",
    "upsertCommand",
    "appendMessage",
    "appendReasoningSection",
    "appendCommandChunk",
    "appendUsageSnapshot",
    "appendRateLimit",
    "appendEvent",
]

OP_TABLE: Final[dict[str, str]] = {
    "upsertConversation": "conversations",
    "upsertTurn": "turns",
    "upsertCommand": "commands",
    "appendMessage": "messages",
    "appendReasoningSection": "reasoning_sections",
    "appendCommandChunk": "command_chunks",
    "appendUsageSnapshot": "usage_snapshots",
    "appendRateLimit": "rate_limits",
    "appendEvent": "events_raw",
}

TURN_TERMINAL: Final = frozenset({"succeeded", "failed", "canceled"})
COMMAND_TERMINAL: Final = frozenset({"completed", "failed", "declined"})

# Columns of type `any`: sent as `<column>Json` text when Convex cannot hold the value as is.
ANY_COLUMNS: Final = ("payload", "rawContent", "parsedCmd", "workflowArgs")


class Op(TypedDict):
    op: OpName
    key: str
    args: dict[str, Any]


class EventArgs(dict[str, Any]):
    """The args of an `appendEvent` whose payload is its whole input line: a plain dict to everyone
    (equal to one, serialized as one), which also remembers the line's own JSON text, so that a sink
    storing JSON text (SQLite) can keep that exact text instead of encoding the parsed value again.

    `line_json` is `(payload, text)`: the text is the payload's only while `args["payload"]` is still
    that very object (a sink checks with `is`)."""

    __slots__ = ("line_json",)

    line_json: tuple[Any, bytes] | None


def make_key(prefix: str, *parts: object) -> str:
    """A deterministic idempotency key: `prefix:` + 32 hex chars of BLAKE2b over the parts."""
    digest = hashlib.blake2b(orjson.dumps(parts), digest_size=16).hexdigest()
    return f"{prefix}:{digest}"


_MAX_SAFE_INT: Final = 2**53
# A column value sits one level inside its document, and the document inside the batch arguments:
# keep the value two levels under Convex's nesting limit of 16.
_MAX_DEPTH: Final = 14
_MAX_ARRAY: Final = 8192
_MAX_FIELDS: Final = 1024
_MAX_FIELD_NAME: Final = 1024


def _safe_field_name(name: str) -> bool:
    return (
        0 < len(name) <= _MAX_FIELD_NAME
        and not name.startswith("$")
        and name.isascii()
        and name.isprintable()
    )


def is_convex_safe(value: object, depth: int = 1) -> bool:
    """True when Convex can store `value` as a document value exactly, with no loss."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, list):
        return len(value) <= _MAX_ARRAY and all(is_convex_safe(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return len(value) <= _MAX_FIELDS and all(
            isinstance(k, str) and _safe_field_name(k) and is_convex_safe(v, depth + 1)
            for k, v in value.items()
        )
    return False


def encode_any_columns(
    args: dict[str, Any], is_safe: Callable[[object], bool] = is_convex_safe
) -> dict[str, Any]:
    """Replace each unsafe `any` column by its JSON text in `<column>Json` (see the contract).
    `is_safe`: `is_convex_safe` or an equal, faster check (the normalizer's)."""
    out = args
    for column in ANY_COLUMNS:
        value = args.get(column)
        if value is not None and not is_safe(value):
            if out is args:
                out = dict(args)
            del out[column]
            out[column + "Json"] = orjson.dumps(value).decode()
    return out
