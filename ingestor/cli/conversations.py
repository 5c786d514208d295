"""`ingestor show conversations`: which conversations the store holds, the most recently active first.

Both readers return the same summary rows (convex/summaries.ts `listConversations`, and the SQLite
reader): the conversation's ids, client and times, its counts of turns, shell commands and other
tool calls, the model of its latest turn that names one, and its working directory. Filters are
applied here, over the pages the reader returns, so they mean the same thing in both stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ingestor.cli.show import fmt_time
from ingestor.sinks.base import HistoryReader

Row = dict[str, Any]

PAGE: Final = 50
"""Summaries asked of a reader at once (each costs the Convex query a few index reads)."""


@dataclass(frozen=True, slots=True)
class Filters:
    since: int | None = None
    """Active at or after this time (ms): last seen no earlier."""
    until: int | None = None
    """Active at or before this time (ms): started no later."""
    cwd: str | None = None
    """Working directory equal to this, or below it."""
    model: str | None = None
    limit: int | None = None

    def admits(self, row: Row) -> bool:
        if self.until is not None and row["startedAt"] > self.until:
            return False
        if self.model is not None and row.get("model") != self.model:
            return False
        if self.cwd is not None:
            cwd = row.get("cwd")
            base = self.cwd.rstrip("/") or "/"
            if cwd is None or not (cwd == base or cwd.startswith(base.rstrip("/") + "/")):
                return False
        return True


async def list_conversations(reader: HistoryReader, filters: Filters) -> list[Row]:
    """The summaries `filters` admits, most recently active first, at most `filters.limit`."""
    found: list[Row] = []
    cursor: str | None = None
    while True:
        page, cursor = await reader.list_conversations(cursor, PAGE)
        for row in page:
            if filters.since is not None and row["lastSeenAt"] < filters.since:
                return found  # recent first: every later one was last seen earlier still
            if filters.admits(row):
                found.append(row)
                if filters.limit is not None and len(found) >= filters.limit:
                    return found
        if cursor is None:
            return found


def _columns(row: Row) -> list[str]:
    return [
        row.get("threadId") or row["conversationId"],
        fmt_time(row["startedAt"])[:16],
        fmt_time(row["lastSeenAt"])[:16],
        str(row["turns"]),
        str(row["commands"]),
        str(row["toolCalls"]),
        row.get("model") or "-",
        row.get("clientName") or "-",
        row.get("cwd") or "-",
    ]


HEADER: Final = ["thread", "started", "last activity", "turns", "cmds", "tools", "model", "client", "cwd"]


def render_conversations(rows: list[Row]) -> str:
    """A table, one conversation a line; a conversation filed under an id other than its thread's
    (a hello line, `--conversation-id`) gets a second line naming it."""
    if not rows:
        return "no conversations"
    table = [HEADER, *map(_columns, rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER) - 1)]
    out = []
    for line, row in zip(table, [None, *rows], strict=True):
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        out.append("  ".join([*cells, line[-1]]).rstrip())
        if row is not None and row.get("threadId") not in (None, row["conversationId"]):
            out.append(f"  conversation {row['conversationId']}")
    return "\n".join(out)
