"""The store's `threads` table: which conversation each Codex thread is filed under, its model, its
latest turn and the channel whose rate limits it keeps."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from ingestor.sinks.sqlite.rows import Rejected, Upsert, with_column


class Threads:
    """The store's side of "one thread, many channels" (docs/operations.md): the conversation each
    Codex thread is filed under (the first one proposed for it) and the one channel whose rate-limit
    reports it keeps (the first to report). Read once per thread per transaction."""

    __slots__ = ("_conn", "_rows")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._rows: dict[str, list[str | None]] = {}
        """threadId -> [conversationId, rateLimitSource, model, lastTurnId], as stored (or about to be)."""

    def _row(self, thread: str) -> list[str | None]:
        row = self._rows.get(thread)
        if row is None:
            found = self._conn.execute(
                "SELECT conversationId, rateLimitSource, model, lastTurnId FROM threads WHERE threadId = ?",
                (thread,),
            ).fetchone()
            if found is None:
                self._conn.execute("INSERT INTO threads (threadId) VALUES (?)", (thread,))
                found = (None, None, None, None)
            row = self._rows[thread] = list(found)
        return row

    def resolve(self, thread: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """`args` with the conversation the thread is filed under (filing it under the proposed one
        when it is new)."""
        proposed = args.get("conversationId")
        if type(proposed) is not str:
            return args
        row = self._row(thread)
        filed = row[0]
        if filed is None:
            self._set(thread, row, 0, proposed)
            return args
        if filed == proposed:
            return args
        return with_column(args, "conversationId", filed)

    def running_turn(self, thread: str, upserts: Mapping[tuple[str, str], Upsert]) -> str | None:
        """The thread's latest turn while it is still running (as this transaction leaves it)."""
        latest = self._row(thread)[3]
        if latest is None:
            return None
        pending = upserts.get(("turns", latest))
        if pending is not None:
            status = None if pending.row is None else pending.row.get("status")
        else:
            found = self._conn.execute("SELECT status FROM turns WHERE turnId = ?", (latest,)).fetchone()
            status = None if found is None else found[0]
        return latest if status == "running" else None

    def _set(self, thread: str, row: list[str | None], column: int, value: str) -> None:
        row[column] = value
        name = ("conversationId", "rateLimitSource", "model", "lastTurnId")[column]
        self._conn.execute(f"UPDATE threads SET {name} = ? WHERE threadId = ?", (value, thread))

    def turn(self, thread: str, values: dict[str, Any], new: bool) -> None:
        """A turn's model is remembered as the thread's when the stream says it; a new turn whose
        stream did not say (one that began in the middle of the thread) gets the thread's. A new turn
        is the thread's latest."""
        row = self._row(thread)
        model = values.get("model")
        if type(model) is str:
            self.remember_model(thread, model)
        elif new and row[2] is not None:
            values["model"] = row[2]
        if new:
            self._set(thread, row, 3, values["turnId"])

    def remember_model(self, thread: str, model: Any) -> None:
        row = self._row(thread)
        if type(model) is str and row[2] != model:
            self._set(thread, row, 2, model)

    def latest_turn(self, thread: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """A usage snapshot or rate limit told without a turn: in the thread's latest turn."""
        if args.get("turnId") is not None:
            return args
        latest = self._row(thread)[3]
        if latest is None:
            raise Rejected("told without a turn, and no turn of its thread is stored")
        return with_column(args, "turnId", latest)

    def keeps_rate_limits(self, thread: str, channel: Any) -> bool:
        if type(channel) is not str:
            return True
        row = self._row(thread)
        if row[1] is None:
            self._set(thread, row, 1, channel)
        return row[1] == channel
