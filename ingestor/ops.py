"""The operations every sink applies: see docs/operations.md (the contract).

Pure data and pure functions only: no I/O here.
"""

from __future__ import annotations

import hashlib
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

# Columns of type `any`: sent as `<column>Json` text when Convex cannot hold the value as is
# (ingestor.sinks.wire).
ANY_COLUMNS: Final = ("payload", "rawContent", "parsedCmd", "workflowArgs")


class Op(TypedDict):
    op: OpName
    key: str
    args: dict[str, Any]


class EventArgs(dict[str, Any]):
    """The args of an `appendEvent` whose payload is its whole input line: a plain dict to everyone
    (equal to one, serialized as one), which also remembers the line's own JSON text, so that sinks
    keep or send that exact text instead of encoding the parsed value again (SQLite stores it, the
    Convex encoding sends it: `ingestor.sinks.wire`).

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


_INFINITIES: Final = (float("inf"), float("-inf"))
_GOOD_KEYS: Final[set[str]] = set()
"""Field names already found valid: Codex uses a few hundred, and a set lookup is cheaper than the
checks. A memo only (it never changes an answer), bounded so arbitrary keys can't grow it forever."""
_GOOD_KEYS_MAX: Final = 10_000


def _good_key(key: Any) -> bool:
    if (
        type(key) is not str
        or not 0 < len(key) <= _MAX_FIELD_NAME
        or key[0] == "$"
        or not key.isascii()
        or not key.isprintable()
    ):
        return False
    if len(_GOOD_KEYS) < _GOOD_KEYS_MAX:
        _GOOD_KEYS.add(key)
    return True


def safety(value: Any, depth: int = 1) -> int:
    """0 = unsafe, 1 = safe, 2 = safe but holds a float (which may be orjson's reading of an integer
    beyond 64 bits: a caller holding the JSON text checks it for long digit runs).

    Written for speed (it runs on every raw event sent to Convex): keys are checked in one C-level
    `issuperset` against the memo, and values that are strings (most of them) cost one type test.
    tests/test_ops.py holds it equal to a plain recursive reading of the rules."""
    kind = type(value)
    if kind is dict:
        if len(value) > _MAX_FIELDS or depth > _MAX_DEPTH:
            return 0
        if not _GOOD_KEYS.issuperset(value):
            for key in value:
                if key not in _GOOD_KEYS and not _good_key(key):
                    return 0
        items: Any = value.values()
    elif kind is list:
        if len(value) > _MAX_ARRAY or depth > _MAX_DEPTH:
            return 0
        items = value
    elif kind is str or kind is bool or value is None:
        return 1
    elif kind is int:
        return 1 if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else 0
    elif kind is float:
        return 2 if value == value and value not in _INFINITIES else 0
    else:
        return 0
    result = 1
    for item in items:
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_MAX_SAFE_INT <= item <= _MAX_SAFE_INT:
                continue
            return 0
        if kind is float:
            if item == item and item not in _INFINITIES:
                result = 2
                continue
            return 0
        if kind is dict and depth < _MAX_DEPTH and len(item) <= _MAX_FIELDS and _GOOD_KEYS.issuperset(item):
            # One level down without a call: most nested objects hold scalars only. Anything else
            # (or a float, or a large integer) is walked again the general way.
            for sub in item.values():
                kind = type(sub)
                if kind is str or kind is bool or sub is None:
                    continue
                if kind is int and -_MAX_SAFE_INT <= sub <= _MAX_SAFE_INT:
                    continue
                break
            else:
                continue
        found = safety(item, depth + 1)
        if found != 1:
            if found == 0:
                return 0
            result = 2
    return result


def is_convex_safe(value: object) -> bool:
    """True when Convex can store `value` as a document value exactly, with no loss."""
    return safety(value) != 0


def encode_any_columns(args: dict[str, Any]) -> dict[str, Any]:
    """Replace each unsafe `any` column by its JSON text in `<column>Json` (see the contract)."""
    out = args
    for column in ANY_COLUMNS:
        value = args.get(column)
        if value is not None and safety(value) == 0:
            if out is args:
                out = dict(args)
            del out[column]
            out[column + "Json"] = orjson.dumps(value).decode()
    return out
