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
COMMAND_TERMINAL: Final = frozenset({"completed", "failed", "declined", "canceled"})

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
