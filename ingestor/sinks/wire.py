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

from typing import Any, Final

import orjson

from ingestor.ops import EventArgs, Op, encode_any_columns, safety

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
        return {"op": name, "key": op["key"], "args": event_args(op["args"])}
    if name in _WITH_ANY_COLUMNS:
        args = encode_any_columns(op["args"])
        if args is not op["args"]:
            return {"op": name, "key": op["key"], "args": args}
    return op


def encode_op(op: Op) -> bytes:
    """One op as sent to Convex: JSON bytes."""
    return _dumps(convex_op(op))
