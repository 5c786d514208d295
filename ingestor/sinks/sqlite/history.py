"""Reading the embedded store back, in the shapes of the Convex `history:*` queries.

Rows come out as Convex documents would: camelCase columns, absent values left out, arrays and
`any` values decoded from their JSON text, booleans as booleans. The SQLite `id` is not shown.

`any` columns are presented as `history:*` presents them (convex/lib/present.ts): the store keeps
one JSON text per column whichever form arrived, so a value Convex cannot carry (the daemon sent it
as `<column>Json`, `ingestor.sinks.wire.is_convex_safe`) comes back as that untouched `<column>Json` text,
and numbers come back as Convex returns its float64s (`base.json_numbers`: `11.0` reads as `11`).
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread

from ingestor.errors import NotFoundError
from ingestor.sinks.base import json_numbers
from ingestor.sinks.sqlite.rows import loads_json
from ingestor.sinks.sqlite.schema import TABLES, Table
from ingestor.sinks.sqlite.sink import connect
from ingestor.sinks.sqlite.summaries import conversation_page, usage_page
from ingestor.sinks.wire import is_convex_safe

Row = dict[str, Any]


# As history:getTurn: in declared position (unpositioned last), then arrival.
_REASONING_ORDER = "turnId = ? ORDER BY position IS NULL, position, createdAt, id"


def present_any(name: str, text: str) -> tuple[str, Any]:
    """An `any` column's stored JSON text as `history:*` returns it: `(name, value)` when Convex can
    carry the value, else `(name + "Json", text)`, the text untouched."""
    try:
        value = loads_json(text)
    except RecursionError:
        # Nested deeper than the stdlib reads (about 1,000 levels): far past Convex's 16 as well.
        return name + "Json", text
    if is_convex_safe(value):
        return name, value
    return name + "Json", text


def _select(conn: sqlite3.Connection, table: Table) -> str:
    """Every column of `table`, as unknown (NULL) where a store made by an earlier version has none
    yet: `show` opens it read-only, and only a writer adds new columns."""
    present = {row[1] for row in conn.execute(f"PRAGMA table_info({table.name})")}
    columns = [name if name in present else f"NULL AS {name}" for name in table.column_names]
    return f"SELECT {', '.join(columns)} FROM {table.name}"


def _document(table: Table, values: tuple[Any, ...]) -> Row:
    row: Row = {}
    for column, value in zip(table.columns, values, strict=True):
        if value is None:
            continue
        name = column.name
        kind = column.kind
        if kind == "json":
            name, value = present_any(name, value)
        elif kind == "strings":
            value = loads_json(value)
        elif kind == "bool":
            value = bool(value)
        row[name] = json_numbers(value) if kind != "text" else value
    return row


def _rows(conn: sqlite3.Connection, table_name: str, where: str, params: tuple[Any, ...]) -> list[Row]:
    table = TABLES[table_name]
    cursor = conn.execute(f"{_select(conn, table)} WHERE {where}", params)
    return [_document(table, values) for values in cursor]


def _one(conn: sqlite3.Connection, table_name: str, where: str, params: tuple[Any, ...]) -> Row | None:
    rows = _rows(conn, table_name, f"{where} LIMIT 1", params)
    return rows[0] if rows else None


def _decode_chunk(chunk: str) -> bytes:
    try:
        return base64.b64decode(chunk + "=" * (-len(chunk) % 4))
    except binascii.Error:
        # Not base64 after all: keep the text rather than lose the output.
        return chunk.encode()


MERGED_ENCODING: Final = "utf-8-merged"
"""v2 output deltas: text with stdout and stderr merged (`ingestor.normalize.app_server.V2_ENCODING`)."""
CALL_FIELDS: Final = ("source", "command", "parsedCmd", "parsedCmdJson")


def command_output(call_id: str, command: Row | None, chunks: list[Row]) -> Row | None:
    """`getCommandOutput`: chunks decoded and joined in seq order per stream (anything but
    `stderr` counts as stdout). Without chunks, the command's own final `stdout`/`stderr`, else its
    merged `aggregatedOutput` as stdout (Codex 0.169 streams nothing for short commands). `call`: the
    command row's `source`, `command` and `parsedCmd` (or `parsedCmdJson`), when it is stored;
    `aggregatedOutput` the row's, when it has one; `merged` when stdout is stdout and stderr merged."""
    if command is None and not chunks:
        return None
    # What the output belongs to (source, argv, parsedCmd: a file change's diffs, an MCP call's
    # arguments and result), as history:getCommandOutput gives it.
    call = {} if command is None else {"call": {k: command[k] for k in CALL_FIELDS if k in command}}
    aggregated = (
        {}
        if command is None or "aggregatedOutput" not in command
        else {"aggregatedOutput": command["aggregatedOutput"]}
    )
    if not chunks and command is not None:
        stdout, stderr = command.get("stdout"), command.get("stderr")
        merged = {}
        if stdout is None and stderr is None:
            stdout = command.get("aggregatedOutput")
            merged = {} if stdout is None else {"merged": True}
        return {
            "callId": call_id,
            "chunkCount": 0,
            "stdout": stdout or "",
            "stderr": stderr or "",
            **call,
            **aggregated,
            **merged,
        }
    out = bytearray()
    err = bytearray()
    for chunk in chunks:
        (err if chunk.get("stream") == "stderr" else out).extend(_decode_chunk(chunk["chunkBase64"]))
    merged = {"merged": True} if any(c.get("encoding") == MERGED_ENCODING for c in chunks) else {}
    return {
        "callId": call_id,
        "chunkCount": len(chunks),
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace"),
        **call,
        **aggregated,
        **merged,
    }


class SqliteHistory:
    """The `HistoryReader` over the embedded store."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._limiter = anyio.CapacityLimiter(1)

    async def get_conversation(self, conversation_id: str) -> Row | None:
        return await self._run(self._conversation, conversation_id)

    async def get_turn(self, turn_id: str) -> Row | None:
        return await self._run(self._turn, turn_id)

    async def get_command_output(self, call_id: str) -> Row | None:
        return await self._run(self._command_output, call_id)

    async def list_events(self, conversation_id: str, limit: int | None = None) -> list[Row]:
        return await anyio.to_thread.run_sync(self._events, conversation_id, limit, limiter=self._limiter)

    async def list_conversations(self, cursor: str | None, count: int) -> tuple[list[Row], str | None]:
        return await anyio.to_thread.run_sync(
            conversation_page, self._conn, cursor, count, limiter=self._limiter
        )

    async def list_usage(self, cursor: str | None, count: int) -> tuple[list[Row], str | None]:
        return await anyio.to_thread.run_sync(usage_page, self._conn, cursor, count, limiter=self._limiter)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._conn.close, limiter=self._limiter)

    async def _run(self, query: Any, argument: str) -> Row | None:
        result: Row | None = await anyio.to_thread.run_sync(query, argument, limiter=self._limiter)
        return result

    def _conversation(self, conversation_id: str) -> Row | None:
        conversation = _one(self._conn, "conversations", "conversationId = ?", (conversation_id,))
        if conversation is None:
            return None
        turns = _rows(self._conn, "turns", "conversationId = ? ORDER BY startedAt, id", (conversation_id,))
        return {"conversation": conversation, "turns": turns}

    def _turn(self, turn_id: str) -> Row | None:
        turn = _one(self._conn, "turns", "turnId = ?", (turn_id,))
        if turn is None:
            return None
        by_turn = (turn_id,)
        return {
            "turn": turn,
            "messages": _rows(self._conn, "messages", "turnId = ? ORDER BY createdAt, id", by_turn),
            "reasoningSections": _rows(self._conn, "reasoning_sections", _REASONING_ORDER, by_turn),
            "commands": _rows(self._conn, "commands", "turnId = ? ORDER BY startedAt, id", by_turn),
            "usageSnapshots": _rows(
                self._conn, "usage_snapshots", "turnId = ? ORDER BY capturedAt, id", by_turn
            ),
            "rateLimits": _rows(self._conn, "rate_limits", "turnId = ? ORDER BY capturedAt, id", by_turn),
        }

    def _command_output(self, call_id: str) -> Row | None:
        command = _one(self._conn, "commands", "callId = ?", (call_id,))
        chunks = _rows(self._conn, "command_chunks", "callId = ? ORDER BY seq, stream, id", (call_id,))
        return command_output(call_id, command, chunks)

    def _events(self, conversation_id: str, limit: int | None) -> list[Row]:
        return _rows(
            self._conn,
            "events_raw",
            "conversationId = ? ORDER BY receivedAt, id LIMIT ?",
            (conversation_id, -1 if limit is None else limit),
        )


class StoreMissingError(NotFoundError):
    """`show` on a store file that does not exist (opening it would create an empty one)."""


@asynccontextmanager
async def open_sqlite_history(path: str | Path) -> AsyncIterator[SqliteHistory]:
    if not Path(path).is_file():
        raise StoreMissingError(
            f"no SQLite store at {path}: nothing stored there yet (`ingestor replay ~/.codex/sessions` "
            "stores Codex's session files), or name the store with --sink sqlite:PATH"
        )
    conn = await anyio.to_thread.run_sync(lambda: connect(path, read_only=True))
    reader = SqliteHistory(conn)
    try:
        yield reader
    finally:
        with anyio.CancelScope(shield=True):
            await reader.aclose()
