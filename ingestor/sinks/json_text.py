"""JSON text of any value an op can carry, exactly and at any depth.

orjson stops at 255 levels of nesting and refuses integers beyond 64 bits; the stdlib recurses once
per level and hits Python's recursion limit near 1,000. A producer controls both (orjson reads up to
1,024 levels), and one such value must not end the daemon: what orjson cannot write is written here
with an explicit stack, with the same compact text orjson would give.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class _Text(str):
    """Already-encoded JSON text on the stack (a plain `str` there is a value still to encode)."""

    __slots__ = ()


def dumps_json(value: Any) -> str:
    """Compact JSON text of `value` (parsed JSON: dicts with string keys, lists, scalars)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _dumps_with_stack(value)


def _scalar(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits: the stdlib writes it exactly.
        return json.dumps(value, ensure_ascii=False)


def _dumps_with_stack(value: Any) -> str:
    parts: list[str] = []
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, _Text):
            parts.append(item)
        elif isinstance(item, dict):
            parts.append("{")
            pending.append(_Text("}"))
            entries = list(item.items())
            for index in range(len(entries) - 1, -1, -1):
                key, sub = entries[index]
                pending.append(sub)
                pending.append(_Text(("," if index else "") + _scalar(key) + ":"))
        elif isinstance(item, list):
            parts.append("[")
            pending.append(_Text("]"))
            for index in range(len(item) - 1, -1, -1):
                pending.append(item[index])
                if index:
                    pending.append(_Text(","))
        else:
            parts.append(_scalar(item))
    return "".join(parts)
