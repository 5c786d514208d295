"""The operations every sink applies: see docs/operations.md (the contract).

Pure data and pure functions only: no I/O here.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Literal, NotRequired, TypedDict

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
    thread: NotRequired[str]
    """The Codex thread the op's conversation row, turn or raw event belongs to. The store files a
    thread under the first conversation it was filed under and resolves `conversationId` by it
    (docs/operations.md, "One thread, many channels")."""
    channel: NotRequired[str]
    """Rate limits: the kind of stream that reported them; the store keeps one channel per thread."""
    unknown_turn: NotRequired[bool]
    """Raw events: the stream knew no turn of the thread yet (it may have begun in the middle of
    one), so the store files the event in the thread's latest turn if that turn is still running."""
    model: NotRequired[str]
    """Conversations: the thread's model as its stream told it, for the thread's turns whose stream
    did not (one that began in the middle of the thread)."""
    run: NotRequired[bool]
    """The op's `turnId` names an `exec --json` run, not a Codex turn: the store files the run as the
    thread's next turn by its ordinal among the thread's runs (or the turn another channel stored in
    that place), and ids under `<turnId>/` (calls, reasoning items) are stored under that turn."""
    call: NotRequired[str]
    """Commands: the call's identity in its turn (argv and its occurrence), by which the store
    matches the same call told by two channels under different call ids (exec and its session file)."""


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
