"""The embedded store's side of convex/summaries.ts: conversation summaries and usage rows, in the
same shapes and order (`Row`s without the absent values), one page at a time."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from ingestor.sinks.sqlite.rows import loads_json

Row = dict[str, Any]

CWD_EVENTS: Final = 20
"""Raw events read, from a conversation's first, to find its working directory."""


def cwd_of(line: Any) -> str | None:
    """The working directory a raw line names: a session file's `session_meta` or `turn_context`, or
    an app-server `thread/started` (`codex exec --json` names none). As convex/summaries.ts `cwdOf`."""
    if not isinstance(line, dict):
        return None
    found: Any = None
    if line.get("type") in ("session_meta", "turn_context"):
        payload = line.get("payload")
        found = payload.get("cwd") if isinstance(payload, dict) else None
    elif line.get("method") == "thread/started":
        params = line.get("params")
        thread = params.get("thread") if isinstance(params, dict) else None
        found = thread.get("cwd") if isinstance(thread, dict) else None
    return found if isinstance(found, str) and found else None


_TOOL_SOURCES: Final = "('file', 'mcp', 'search')"

_CONVERSATIONS: Final = f"""
SELECT c.conversationId, c.threadId, c.clientName, c.modelProvider, c.startedAt, c.lastSeenAt,
  (SELECT count(*) FROM turns t WHERE t.conversationId = c.conversationId),
  (SELECT count(*) FROM commands m JOIN turns t ON m.turnId = t.turnId
     WHERE t.conversationId = c.conversationId AND coalesce(m.source, '') NOT IN {_TOOL_SOURCES}),
  (SELECT count(*) FROM commands m JOIN turns t ON m.turnId = t.turnId
     WHERE t.conversationId = c.conversationId AND m.source IN {_TOOL_SOURCES}),
  (SELECT t.model FROM turns t WHERE t.conversationId = c.conversationId AND t.model IS NOT NULL
     ORDER BY t.startedAt DESC, t.id DESC LIMIT 1)
FROM conversations c ORDER BY c.lastSeenAt DESC, c.id DESC LIMIT ? OFFSET ?
"""
_SUMMARY_FIELDS: Final = (
    "conversationId",
    "threadId",
    "clientName",
    "modelProvider",
    "startedAt",
    "lastSeenAt",
    "turns",
    "commands",
    "toolCalls",
    "model",
)

_USAGE: Final = """
SELECT u.id, u.turnId, t.conversationId, c.threadId, t.model, u.capturedAt, u.totalInputTokens,
  u.cachedInputTokens, u.outputTokens, u.reasoningOutputTokens, u.totalTokens, u.restarted,
  c.forkedFromUsage
FROM usage_snapshots u
  LEFT JOIN turns t ON t.turnId = u.turnId
  LEFT JOIN conversations c ON c.conversationId = t.conversationId
WHERE u.id > ? ORDER BY u.id LIMIT ?
"""
# Keyset paging (the cursor is the last row's id): an OFFSET re-reads every row before it, so
# reading all of a large store page by page was quadratic (9.3 s for 20,000 sessions' snapshots).
_USAGE_FIELDS: Final = (
    "turnId",
    "conversationId",
    "threadId",
    "model",
    "capturedAt",
    "totalInputTokens",
    "cachedInputTokens",
    "outputTokens",
    "reasoningOutputTokens",
    "totalTokens",
    "restarted",
    "forkedFromUsage",
)


def _present(fields: tuple[str, ...], values: Sequence[Any]) -> Row:
    return {name: value for name, value in zip(fields, values, strict=True) if value is not None}


def _cwd(conn: sqlite3.Connection, conversation_id: str) -> str | None:
    events = conn.execute(
        "SELECT payload FROM events_raw WHERE conversationId = ? ORDER BY receivedAt, id LIMIT ?",
        (conversation_id, CWD_EVENTS),
    )
    for (payload,) in events:
        try:
            found = cwd_of(loads_json(payload))
        except (ValueError, RecursionError):
            continue
        if found is not None:
            return found
    # exec --json names no directory: the first command's, when one ran.
    first = conn.execute(
        "SELECT m.cwd FROM commands m JOIN turns t ON m.turnId = t.turnId WHERE t.conversationId = ?"
        " AND m.cwd IS NOT NULL ORDER BY t.startedAt, t.id, m.startedAt, m.id LIMIT 1",
        (conversation_id,),
    ).fetchone()
    return None if first is None else str(first[0])


def _page(offset: int, count: int, rows: int) -> str | None:
    return str(offset + count) if rows == count else None


def conversation_page(
    conn: sqlite3.Connection, cursor: str | None, count: int
) -> tuple[list[Row], str | None]:
    offset = int(cursor or 0)
    rows = []
    for values in conn.execute(_CONVERSATIONS, (count, offset)).fetchall():
        row = _present(_SUMMARY_FIELDS, values)
        cwd = _cwd(conn, row["conversationId"])
        rows.append(row if cwd is None else {**row, "cwd": cwd})
    return rows, _page(offset, count, len(rows))


def usage_page(conn: sqlite3.Connection, cursor: str | None, count: int) -> tuple[list[Row], str | None]:
    last_id = int(cursor or 0)
    rows = []
    for row_id, *values in conn.execute(_USAGE, (last_id, count)):
        last_id = row_id
        row = _present(_USAGE_FIELDS, values)
        if "forkedFromUsage" in row:  # a JSON column: the object Convex returns
            row["forkedFromUsage"] = loads_json(row["forkedFromUsage"])
        if "restarted" in row:  # SQLite's 0/1: the boolean Convex returns
            row["restarted"] = bool(row["restarted"])
        rows.append(row)
    return rows, str(last_id) if len(rows) == count else None
