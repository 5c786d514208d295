"""The operations every sink applies: see docs/operations.md (the contract).

Pure data and pure functions only: no I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, NotRequired, Required, TypedDict, Unpack, overload

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


# The args of each op: its table's columns (docs/operations.md; convex/lib/validators.ts `opArgs`,
# checked against these by tests/e2e/test_contract.py). Absent = unknown; `None` is read as unknown too.
# Plain dicts at runtime: the types cost nothing per line, and mypy rejects a misspelled column.


class ForkedFromUsage(TypedDict, total=False):
    totalInputTokens: float
    cachedInputTokens: float
    outputTokens: float
    reasoningOutputTokens: float
    totalTokens: float


class UpsertConversationArgs(TypedDict, total=False):
    conversationId: Required[str]
    threadId: str | None
    modelProvider: str | None
    clientName: str | None
    startedAt: int | None
    lastSeenAt: int | None
    forkedFromThreadId: str | None
    forkedFromUsage: ForkedFromUsage | None


class UpsertTurnArgs(TypedDict, total=False):
    turnId: Required[str]
    conversationId: str | None
    chatId: str | None
    userId: str | None
    model: str | None
    serviceTier: str | None
    status: str | None
    error: str | None
    path: str | None
    turnNumber: int | None
    startedAt: int | None
    endedAt: int | None


class CommandColumns(TypedDict, total=False):
    """What an event tells of a call (the normalizer's sources give these; `None` = not told)."""

    turnId: str | None
    command: list[str] | None
    cwd: str | None
    source: str | None
    parsedCmd: Any
    parsedCmdJson: str | None
    status: str | None
    startedAt: int | None
    endedAt: int | None
    exitCode: int | None
    durationMs: float | None
    stdout: str | None
    stderr: str | None
    aggregatedOutput: str | None
    chunked: bool | None


class UpsertCommandArgs(CommandColumns):
    callId: str


class AppendMessageArgs(TypedDict):
    turnId: str
    role: str
    content: str
    rawContent: NotRequired[Any]
    rawContentJson: NotRequired[str | None]
    createdAt: int


class AppendReasoningSectionArgs(TypedDict):
    turnId: str
    itemId: str
    summaryText: NotRequired[list[str] | None]
    rawContent: NotRequired[Any]
    rawContentJson: NotRequired[str | None]
    position: NotRequired[int | None]
    createdAt: int


class AppendCommandChunkArgs(TypedDict):
    callId: str
    stream: str
    seq: NotRequired[int]
    """Absent: the store numbers the call's chunks in arrival order."""
    chunkBase64: str
    encoding: NotRequired[str | None]
    createdAt: int


class AppendUsageSnapshotArgs(TypedDict, total=False):
    turnId: str
    """Absent only with the op's `thread`: the store files it in the thread's latest turn."""
    totalInputTokens: float | None
    cachedInputTokens: float | None
    outputTokens: float | None
    reasoningOutputTokens: float | None
    totalTokens: float | None
    modelContextWindow: int | None
    source: str | None
    restarted: bool
    """The totals count from zero here (docs/operations.md, "Reading usage")."""
    capturedAt: Required[int]


class AppendRateLimitArgs(TypedDict, total=False):
    turnId: str
    """Absent only with the op's `thread`: the store files it in the thread's latest turn."""
    scope: Required[str]
    usedPercent: float | None
    windowMinutes: float | None
    resetsAt: int | None
    balance: str | None
    unlimited: bool | None
    hasCredits: bool | None
    capturedAt: Required[int]


class AppendEventArgs(TypedDict):
    conversationId: str
    turnId: NotRequired[str | None]
    method: str
    payload: NotRequired[Any]
    payloadJson: NotRequired[str | None]
    receivedAt: int


class _OpFields(TypedDict):
    key: str
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


class UpsertConversation(_OpFields):
    op: Literal["upsertConversation"]
    args: UpsertConversationArgs


class UpsertTurn(_OpFields):
    op: Literal["upsertTurn"]
    args: UpsertTurnArgs


class UpsertCommand(_OpFields):
    op: Literal["upsertCommand"]
    args: UpsertCommandArgs


class AppendMessage(_OpFields):
    op: Literal["appendMessage"]
    args: AppendMessageArgs


class AppendReasoningSection(_OpFields):
    op: Literal["appendReasoningSection"]
    args: AppendReasoningSectionArgs


class AppendCommandChunk(_OpFields):
    op: Literal["appendCommandChunk"]
    args: AppendCommandChunkArgs


class AppendUsageSnapshot(_OpFields):
    op: Literal["appendUsageSnapshot"]
    args: AppendUsageSnapshotArgs


class AppendRateLimit(_OpFields):
    op: Literal["appendRateLimit"]
    args: AppendRateLimitArgs


class AppendEvent(_OpFields):
    op: Literal["appendEvent"]
    args: AppendEventArgs
    """An `EventArgs` when the normalizer made it."""


Op = (
    UpsertConversation
    | UpsertTurn
    | UpsertCommand
    | AppendMessage
    | AppendReasoningSection
    | AppendCommandChunk
    | AppendUsageSnapshot
    | AppendRateLimit
    | AppendEvent
)
"""One operation (docs/operations.md): `op` names its kind and so the type of its `args`."""


class EventArgs(dict[str, Any]):
    """The args of an `appendEvent` whose payload is its whole input line: a plain dict to everyone
    (equal to one, serialized as one), which also remembers the line's own JSON text, so that sinks
    keep or send that exact text instead of encoding the parsed value again (SQLite stores it, the
    Convex encoding sends it: `ingestor.sinks.wire`).

    `line_json` is `(payload, text)`: the text is the payload's only while `args["payload"]` is still
    that very object (a sink checks with `is`)."""

    __slots__ = ("line_json",)

    line_json: tuple[Any, bytes] | None

    if TYPE_CHECKING:  # the columns, checked; at runtime dict's own __init__ (no call in between)

        @overload
        def __init__(self, **args: Unpack[AppendEventArgs]) -> None: ...
        @overload
        def __init__(self, args: Mapping[str, Any], /) -> None: ...  # a copy
        def __init__(self, *args: Any, **columns: Any) -> None: ...


def make_key(prefix: str, *parts: object) -> str:
    """A deterministic idempotency key: `prefix:` + 32 hex chars of BLAKE2b over the parts."""
    digest = hashlib.blake2b(orjson.dumps(parts), digest_size=16).hexdigest()
    return f"{prefix}:{digest}"
