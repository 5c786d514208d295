"""Raw events (`events_raw`): one per input line, whatever the line holds.

Lines that are not JSON are kept too, losslessly where possible:

- not valid UTF-8: method `ingestor/invalidJson`, payload `{"base64": <the exact bytes>}`;
- UTF-8 but not JSON (or JSON orjson refuses, e.g. integers beyond 64 bits): method
  `ingestor/invalidJson`, payload `{"text": <the line>}`;
- longer than the source's limit: method `ingestor/oversize`, payload
  `{"bytes": <full length>, "headBase64": <the first bytes, at most 64 KiB>}` (the rest never reached us).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Final

import orjson

from ingestor.lines import Line
from ingestor.normalize.detect import BAD, classify
from ingestor.normalize.state import Thread
from ingestor.ops import (
    _MAX_ARRAY,
    _MAX_DEPTH,
    _MAX_FIELD_NAME,
    _MAX_FIELDS,
    _MAX_SAFE_INT,
    EventArgs,
    Op,
    encode_any_columns,
)

OVERSIZE_HEAD: Final = 64 * 1024


def parse(line: Line) -> tuple[str, str, Any]:
    """(kind, method, payload) of a line; bad lines get kind `bad` and a lossless stand-in payload."""
    data = line.data
    if line.oversize is not None:
        head = base64.b64encode(data[:OVERSIZE_HEAD]).decode()
        return BAD, "ingestor/oversize", {"bytes": line.oversize, "headBase64": head}
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return BAD, "ingestor/invalidJson", {"text": data.decode()}
        except UnicodeDecodeError:
            return BAD, "ingestor/invalidJson", {"base64": base64.b64encode(data).decode()}
    kind, method = classify(obj)
    return kind, method, obj


_DIGITS: Final = bytes(48 if 48 <= c <= 57 else 46 for c in range(256))
"""Maps digits to `0` and all else to `.`: then 16 digits in a row (maybe an integer beyond 2^53;
orjson itself refuses infinities and integers beyond 2^64) is one substring test, faster than a regex."""
_LONG_RUN: Final = b"0" * 16
_HUGE_RUN: Final = b"0" * 20
"""20 digits: maybe beyond 2^64."""
_SURELY_SMALL: Final = min(_MAX_FIELD_NAME, _MAX_FIELDS, _MAX_ARRAY)
"""Shorter JSON text can't hold a longer field name, more fields or more array items."""


def surely_convex_safe(data: bytes) -> bool:
    """A conservative test on a line's JSON text that spares the walk of `is_convex_safe` for most
    lines. True only when the parsed value must be safe: short; printable ASCII without escapes (so
    every key is printable ASCII); no `"$` (a `$` key) and no `""` (an empty key); fewer brackets than
    the depth limit; no long digit run. Anything else takes the exact path."""
    return (
        len(data) < _SURELY_SMALL
        and data.isascii()
        and b"\\" not in data
        and b"\x7f" not in data
        and b'"$' not in data
        and b'""' not in data
        and data.count(b"{") + data.count(b"[") <= _MAX_DEPTH
        and _LONG_RUN not in data.translate(_DIGITS)
    )


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


def _walk(value: Any, depth: int) -> int:
    """The safety walk of a container: 0 = unsafe, 1 = safe, 2 = safe but it holds a float (which may
    be orjson's reading of an integer beyond 64 bits: see `event_op`). Keys are checked in one C-level
    `issuperset` against the memo; values that are strings (most of them) cost one type test."""
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
        found = _walk(item, depth + 1)
        if found != 1:
            if found == 0:
                return 0
            result = 2
    return result


def _safety(value: Any) -> int:
    """`_walk` for any value (0 unsafe, 1 safe, 2 safe with a float)."""
    kind = type(value)
    if kind is dict or kind is list:
        return _walk(value, 1)
    if kind is float:
        return 2 if value == value and value not in _INFINITIES else 0
    if kind is str or value is None or kind is bool:
        return 1
    if kind is int:
        return 1 if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else 0
    return 0


def convex_safe(value: Any, depth: int = 1) -> bool:
    """`ingestor.ops.is_convex_safe`, exactly (property tests hold them equal), but several times as
    fast on Codex payloads: keys are checked at once, string values cost one type test."""
    kind = type(value)
    if kind is dict or kind is list:
        return _walk(value, depth) != 0
    return _safety(value) != 0


def key_base(conversation_id: str) -> hashlib.blake2b:
    """A BLAKE2b state fed with the conversation id: copying it per line is cheaper than rehashing."""
    return hashlib.blake2b(f"{len(conversation_id)}:{conversation_id}:".encode(), digest_size=16)


def event_key(base: hashlib.blake2b, line: Line) -> str:
    """Deterministic from (conversation, position, content): a replay dedupes, a repeated line does not."""
    h = base.copy()
    h.update(b"%d:%d:" % (line.ordinal, -1 if line.oversize is None else line.oversize))
    h.update(line.data)
    return "e:" + h.hexdigest()


def event_op(thread: Thread, line: Line, method: str, payload: Any, turn_id: str | None, parsed: bool) -> Op:
    """The raw event of a line; `parsed` is False when `payload` stands in for a bad line.

    A parsed line's payload is the line's whole value; when Convex cannot hold it as is, it goes to
    `payloadJson` (see the contract). orjson reads integers beyond 64 bits as floats (and can't write
    them back): a line that may hold one (a float, or an unsafe value, and a run of 20 digits) keeps
    its own JSON text in `payloadJson`, exact."""
    base = thread.key_base
    if base is None:
        base = thread.key_base = key_base(thread.conversation_id)
    data = line.data
    oversize = line.oversize
    h = base.copy()
    h.update(b"%d:-1:" % line.ordinal if oversize is None else b"%d:%d:" % (line.ordinal, oversize))
    h.update(data)
    args = EventArgs()
    args["conversationId"] = thread.conversation_id
    args["method"] = method
    args["payload"] = payload
    args["receivedAt"] = line.received_at
    args.line_json = None
    if turn_id is not None:
        args["turnId"] = turn_id
    if parsed:
        safe = _walk(payload, 1) if type(payload) is dict else _safety(payload)
        if safe == 1:
            args.line_json = (payload, data)
        elif _HUGE_RUN in data.translate(_DIGITS):
            del args["payload"]
            args["payloadJson"] = data.decode()
        elif safe == 2:
            args.line_json = (payload, data)
        else:
            return {
                "op": "appendEvent",
                "key": "e:" + h.hexdigest(),
                "args": encode_any_columns(args, convex_safe),
            }
    # A bad line's stand-in payload (strings and a length) is always safe.
    return {"op": "appendEvent", "key": "e:" + h.hexdigest(), "args": args}
