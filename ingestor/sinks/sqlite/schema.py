"""The tables of the embedded store: the Convex schema (convex/schema.ts) restated for SQLite.

Same table and camelCase column names as Convex, plus an `id INTEGER PRIMARY KEY` (Convex's `_id`).
Column kinds drive both validation (what Convex's validators would refuse, we reject too) and
storage: strings, numbers and booleans as SQLite values, arrays and `any` values as JSON text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["text", "int", "num", "bool", "strings", "json"]

# Declared SQLite types: readable in `.schema`, and affinities that keep values as given
# (JSON must be TEXT: a NUMERIC affinity would turn the JSON text `12` into the integer 12).
SQL_TYPES: Final[dict[Kind, str]] = {
    "text": "TEXT",
    "int": "INTEGER",
    "num": "NUMERIC",
    "bool": "BOOLEAN",
    "strings": "TEXT",
    "json": "TEXT",
}
_SQL_COMMENT: Final[dict[Kind, str]] = {
    "bool": "0/1",
    "strings": "JSON array of strings",
    "json": "JSON",
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    required: bool = False

    @property
    def sql_type(self) -> str:
        return SQL_TYPES[self.kind]


@dataclass(frozen=True, slots=True)
class Index:
    columns: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    identity: str | None = None
    """The natural id of an upsert table; None for append tables (identity = their `key`)."""
    indexes: tuple[Index, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def ddl(self) -> list[str]:
        """CREATE statements, laid out to read well in `sqlite3`'s `.schema`."""
        items: list[tuple[str, str | None]] = [("id INTEGER PRIMARY KEY", None)]
        for column in self.columns:
            not_null = " NOT NULL" if column.required else ""
            items.append((f"{column.name} {column.sql_type}{not_null}", _SQL_COMMENT.get(column.kind)))
        lines = []
        for i, (decl, comment) in enumerate(items):
            comma = "," if i < len(items) - 1 else ""
            lines.append(f"  {decl}{comma}" + (f" -- {comment}" if comment else ""))
        statements = [f"CREATE TABLE IF NOT EXISTS {self.name} (\n" + "\n".join(lines) + "\n)"]
        for index in self.indexes:
            name = f"{self.name}_by_{'_'.join(index.columns)}"
            unique = "UNIQUE " if index.unique else ""
            statements.append(
                f"CREATE {unique}INDEX IF NOT EXISTS {name} ON {self.name} ({', '.join(index.columns)})"
            )
        return statements


def _text(name: str, required: bool = False) -> Column:
    return Column(name, "text", required)


def _int(name: str, required: bool = False) -> Column:
    return Column(name, "int", required)


_KEY: Final = Column("key", "text", True)
_BY_KEY: Final = Index(("key",), unique=True)

TABLES: Final[dict[str, Table]] = {
    t.name: t
    for t in (
        Table(
            "conversations",
            (
                _text("conversationId", True),
                _text("threadId"),
                _text("modelProvider"),
                _text("clientName"),
                _int("startedAt", True),
                _int("lastSeenAt", True),
                _text("forkedFromThreadId"),
                Column("forkedFromUsage", "json"),
            ),
            identity="conversationId",
            # lastSeenAt: `show conversations` lists the most recent first.
            indexes=(Index(("conversationId",), unique=True), Index(("lastSeenAt",))),
        ),
        Table(
            "turns",
            (
                _text("turnId", True),
                _text("conversationId", True),
                _text("chatId"),
                _text("userId"),
                _text("model"),
                _text("serviceTier"),
                _text("status", True),
                _text("error"),
                _text("path"),
                _int("turnNumber"),
                _int("startedAt", True),
                _int("endedAt"),
            ),
            identity="turnId",
            indexes=(
                Index(("turnId",), unique=True),
                Index(("conversationId", "startedAt")),
                Index(("chatId",)),
            ),
        ),
        Table(
            "messages",
            (
                _KEY,
                _text("turnId", True),
                _text("role", True),
                _text("content", True),
                Column("rawContent", "json"),
                _int("createdAt", True),
            ),
            indexes=(_BY_KEY, Index(("turnId", "createdAt")), Index(("createdAt",))),
        ),
        Table(
            "reasoning_sections",
            (
                _KEY,
                _text("turnId", True),
                _text("itemId", True),
                Column("summaryText", "strings"),
                Column("rawContent", "json"),
                _int("position"),
                _int("createdAt", True),
            ),
            indexes=(_BY_KEY, Index(("turnId",))),
        ),
        Table(
            "commands",
            (
                _text("callId", True),
                _text("turnId", True),
                Column("command", "strings", True),
                _text("cwd"),
                _text("source"),
                Column("parsedCmd", "json"),
                _text("status"),
                _int("startedAt", True),
                _int("endedAt"),
                _int("exitCode"),
                Column("durationMs", "num"),
                _text("stdout"),
                _text("stderr"),
                _text("aggregatedOutput"),
                Column("chunked", "bool", True),
            ),
            identity="callId",
            indexes=(Index(("callId",), unique=True), Index(("turnId",))),
        ),
        Table(
            "command_chunks",
            (
                _KEY,
                _text("callId", True),
                _text("stream", True),
                _int("seq", True),
                _text("chunkBase64", True),
                _text("encoding"),
                _int("createdAt", True),
            ),
            indexes=(_BY_KEY, Index(("callId", "stream", "seq"), unique=True), Index(("callId", "seq"))),
        ),
        Table(
            "usage_snapshots",
            (
                _KEY,
                _text("turnId", True),
                _int("totalInputTokens"),
                _int("cachedInputTokens"),
                _int("outputTokens"),
                _int("reasoningOutputTokens"),
                _int("totalTokens"),
                _int("modelContextWindow"),
                _text("source"),
                _int("capturedAt", True),
                Column("restarted", "bool"),
            ),
            indexes=(_BY_KEY, Index(("turnId", "capturedAt"))),
        ),
        Table(
            "rate_limits",
            (
                _KEY,
                _text("turnId", True),
                _text("scope", True),
                Column("usedPercent", "num"),
                Column("windowMinutes", "num"),
                _int("resetsAt"),
                _text("balance"),
                Column("unlimited", "bool"),
                Column("hasCredits", "bool"),
                _int("capturedAt", True),
            ),
            indexes=(_BY_KEY, Index(("turnId", "capturedAt"))),
        ),
        Table(
            "events_raw",
            (
                _KEY,
                _text("conversationId", True),
                _text("turnId"),
                _text("method", True),
                Column("payload", "json", True),
                _int("receivedAt", True),
            ),
            indexes=(_BY_KEY, Index(("conversationId", "receivedAt"))),
        ),
        # The store's side of "one thread, many channels" (docs/operations.md): the conversation each
        # Codex thread was first filed under, the one channel whose rate-limit reports it keeps, its
        # model and latest turn (for what a stream told without saying them).
        Table(
            "threads",
            (
                _text("threadId", True),
                _text("conversationId"),
                _text("rateLimitSource"),
                _text("model"),
                _text("lastTurnId"),
                _int("codexTurns"),
                _int("execTurns"),
            ),
            identity="threadId",
            indexes=(Index(("threadId",), unique=True),),
        ),
        # Every id a thread's turn is known by (Codex's turn id, an exec run's name) with the turn's
        # ordinal in the thread and the turn it is stored as: how an exec run and the session file
        # of the same thread meet (docs/operations.md, "Across processes and channels").
        Table(
            "thread_turns",
            (_text("alias", True), _text("threadId", True), _int("turnNumber", True), _text("turnId", True)),
            indexes=(Index(("alias",), unique=True), Index(("threadId", "turnNumber"))),
        ),
        # Every call id a turn's call is known by, with the call's identity in its turn (`call` on
        # its ops) and the call id it is stored as.
        Table(
            "thread_calls",
            (_text("alias", True), _text("turnId", True), _text("identity", True), _text("callId", True)),
            indexes=(Index(("alias",), unique=True), Index(("turnId", "identity"))),
        ),
        # No operation writes work orders yet; the table exists so the store mirrors the whole schema.
        Table(
            "work_orders",
            (
                _text("sessionId", True),
                _text("workflowType", True),
                Column("workflowArgs", "json"),
                _text("githubIssueUrl"),
                _text("prompt", True),
                _text("title", True),
                _text("status", True),
                _int("createdAt", True),
                _int("updatedAt", True),
                _text("requestedBy", True),
                _text("targetRepo", True),
                _text("targetBranch", True),
                _text("commitSha"),
                _text("prUrl"),
            ),
            indexes=(Index(("sessionId", "createdAt")), Index(("status", "updatedAt"))),
        ),
    )
}
