"""Shared by the normalizer tests (test_normalize*.py, test_golden*.py): feed lines, store the ops."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.ops import Op
from tests.golden.reference_store import ReferenceStore

T0 = 1_800_000_000_000


def as_lines(items: Iterable[Any], source: str = "test") -> list[Line]:
    """Lines from dicts (serialized) or bytes (as they are); received_at = T0 + ordinal."""
    lines = []
    for i, item in enumerate(items):
        data = item if isinstance(item, bytes) else orjson.dumps(item)
        lines.append(Line(source, i, T0 + i, data))
    return lines


def normalize(items: Iterable[Any], *, conversation_id: str | None = None, source: str = "test") -> list[Op]:
    n = Normalizer(source, conversation_id=conversation_id)
    ops: list[Op] = []
    for line in as_lines(items, source):
        ops += n.feed(line)
    ops += n.finish()
    return ops


def store_of(ops: Iterable[Op]) -> ReferenceStore:
    store = ReferenceStore()
    store.apply(ops)
    return store


def rows(ops: Iterable[Op], table: str) -> list[dict[str, Any]]:
    return list(store_of(ops).tables[table].values())


def v2(method: str, **params: Any) -> dict[str, Any]:
    return {"method": method, "params": params}


def legacy(msg: dict[str, Any], sub_id: str = "0", conversation: str = "th1") -> dict[str, Any]:
    return {
        "method": f"codex/event/{msg['type']}",
        "params": {"id": sub_id, "msg": msg, "conversationId": conversation},
    }
