"""Operations as Convex receives them: JSON bytes in Convex's value space.

The normalizer's ops carry `any` values (`payload`, `rawContent`, `parsedCmd`) as Codex sent them;
Convex cannot hold some of those (docs/operations.md, "Values Convex cannot hold as is"). Here, and
only here, such a value goes as its JSON text in `<column>Json`. The Convex sink (and the JSONL sink,
which writes what Convex would get) encode with `encode_op`; the SQLite store keeps JSON text in any
case and decides on reading, as the Convex queries do.

A raw event's payload is its whole input line, whose own JSON text the op carries: that text goes out
as it came (an `orjson.Fragment`), never a re-encoding of the parsed value, and it is also the exact
`payloadJson` when the value is unsafe (orjson reads an integer beyond 64 bits as a float, so only the
text keeps its digits).
"""

from __future__ import annotations

from math import isfinite
from typing import Any, Final

import orjson

from ingestor.ops import ANY_COLUMNS, EventArgs, Op
from ingestor.sinks.json_text import dumps_json

_MAX_SAFE_INT: Final = 2**53
# A column value sits one level inside its document, and the document inside the batch arguments:
# keep the value two levels under Convex's nesting limit of 16.
_MAX_DEPTH: Final = 14
_MAX_ARRAY: Final = 8192
_MAX_FIELDS: Final = 1024
_MAX_FIELD_NAME: Final = 1024
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
    tests/sinks/test_wire.py holds it equal to a plain recursive reading of the rules."""
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
        return 2 if isfinite(value) else 0
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
            if isfinite(item):
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
            out[column + "Json"] = dumps_json(value)
    return out


_WITH_ANY_COLUMNS: Final = frozenset({"appendMessage", "appendReasoningSection", "upsertCommand"})
"""The ops whose tables have an `any` column, besides `appendEvent` (work orders are not ops)."""

_DIGITS: Final = bytes(48 if 48 <= c <= 57 else 46 for c in range(256))
"""Maps digits to `0` and all else to `.`: a run of 20 digits (maybe an integer beyond 2^64, which
orjson read as a float) is then one substring test, faster than a regex."""
_HUGE_RUN: Final = b"0" * 20

_Fragment: Final = orjson.Fragment
_dumps: Final = orjson.dumps


def event_args(args: dict[str, Any]) -> dict[str, Any]:
    """An `appendEvent`'s args for Convex: the payload as the line's own text (`payload` when Convex
    can hold the value, else `payloadJson`)."""
    line_json = args.line_json if type(args) is EventArgs else None
    if line_json is None or "payload" not in args or line_json[0] is not args["payload"]:
        return encode_any_columns(args)
    text = line_json[1]
    safe = safety(line_json[0])
    out = dict(args)
    if safe == 1 or (safe == 2 and _HUGE_RUN not in text.translate(_DIGITS)):
        out["payload"] = _Fragment(text)
    else:
        del out["payload"]
        out["payloadJson"] = text.decode()
    return out


def convex_op(op: Op) -> Op:
    """`op` in Convex's value space (the same op when it already is)."""
    name = op["op"]
    if name == "appendEvent":
        args = event_args(op["args"])
    elif name in _WITH_ANY_COLUMNS:
        args = encode_any_columns(op["args"])
        if args is op["args"]:
            return op
    else:
        return op
    return {**op, "args": args}


def encode_op(op: Op) -> bytes:
    """One op as sent to Convex: JSON bytes."""
    return _dumps(convex_op(op))
