"""The store's `threads` table and what it reconciles per thread (docs/operations.md, "Across
processes and channels"): which conversation each Codex thread is filed under, its model, its latest
turn, the channel whose rate limits it keeps, and the turns and calls two channels name differently
(an `exec --json` run and the session file of the same thread: `thread_turns`, `thread_calls`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from ingestor.ops import Op
from ingestor.sinks.sqlite.rows import Rejected, Upsert, with_column


def _under_run(value: str, turn: str, placed: str, run: bool) -> str:
    """An id under an exec run (`<run>/<item id>`) as the same id under the run's stored turn."""
    if run and value.startswith(turn + "/"):
        return placed + value[len(turn) :]
    return value


class Threads:
    """The store's side of "one thread, many channels" (docs/operations.md): the conversation each
    Codex thread is filed under (the first one proposed for it) and the one channel whose rate-limit
    reports it keeps (the first to report). Read once per thread per transaction."""

    __slots__ = ("_calls", "_conn", "_filed", "_rows", "_turns", "with_runs")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._rows: dict[str, list[Any]] = {}
        """threadId -> [conversationId, rateLimitSource, model, lastTurnId, codexTurns, execTurns], as
        stored (or about to be)."""
        self._turns: dict[str, str] = {}
        """Turn ids (Codex's, an exec run's) -> the turn stored for them, as looked up or filed."""
        self._filed: dict[str, tuple[str, int]] = {}
        """Turn ids upserted in this transaction -> (the turn stored for them, its ordinal)."""
        self._calls: dict[str, str] = {}
        """Call ids -> the call stored for them, as looked up or filed."""
        self.with_runs: set[str] = set()
        """The threads read so far that have exec runs (their ops' ids may be another's)."""

    def _row(self, thread: str) -> list[Any]:
        row = self._rows.get(thread)
        if row is None:
            found = self._conn.execute(
                "SELECT conversationId, rateLimitSource, model, lastTurnId, codexTurns, execTurns"
                " FROM threads WHERE threadId = ?",
                (thread,),
            ).fetchone()
            if found is None:
                self._conn.execute("INSERT INTO threads (threadId) VALUES (?)", (thread,))
                found = (None, None, None, None, None, None)
            elif found[5]:
                self.with_runs.add(thread)
            row = self._rows[thread] = list(found)
        return row

    def place(self, thread: str, op: Op, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """`args` with the turn and call the store files the op's fact in: an exec run is the
        thread's turn of the same ordinal whichever channel stored it first, and a call told by two
        channels under two ids is the call of its turn with the same identity (`call`)."""
        turn = args.get("turnId")
        if type(turn) is not str:
            return args
        run = op.get("run") is True
        name = op["op"]
        # Without an exec run in the thread, every turn and call is stored under its own id.
        self._row(thread)
        aliased = run or thread in self.with_runs
        if name == "upsertTurn":
            placed, number = self._file_turn(thread, turn, run)
            args = with_column(args, "turnNumber", number)
        else:
            placed = self._stored_turn(turn) if aliased else turn
        if placed != turn:
            args = with_column(args, "turnId", placed)
        if name == "upsertCommand":
            call = args.get("callId")
            if type(call) is str:
                own = _under_run(call, turn, placed, run)
                stored = self._file_call(call, placed, own, op.get("call"), aliased)
                if stored != call:
                    args = with_column(args, "callId", stored)
        elif run and name == "appendReasoningSection":
            item = args.get("itemId")
            if type(item) is str:
                args = with_column(args, "itemId", _under_run(item, turn, placed, run))
        return args

    def _stored_turn(self, turn: str) -> str:
        placed = self._turns.get(turn)
        if placed is None:
            found = self._conn.execute("SELECT turnId FROM thread_turns WHERE alias = ?", (turn,)).fetchone()
            placed = self._turns[turn] = turn if found is None else found[0]
        return placed

    def _file_turn(self, thread: str, turn: str, run: bool) -> tuple[str, int]:
        """The turn stored for `turn` and its ordinal in the thread. A turn id met for the first time
        is the thread's next turn of its kind (Codex's turns and exec runs are counted apart): the
        turn stored at that ordinal by the other kind, if any, else a new one (an exec run's is named
        `<thread>/turn-<n>`)."""
        filed = self._filed.get(turn)
        if filed is not None:
            return filed
        found = self._conn.execute(
            "SELECT turnId, turnNumber FROM thread_turns WHERE alias = ?", (turn,)
        ).fetchone()
        if found is not None:
            self._turns[turn] = found[0]
            self._filed[turn] = found
            return found[0], found[1]
        row = self._row(thread)
        column = 5 if run else 4
        number = (row[column] or 0) + 1
        self._set(thread, row, column, number)
        if run:
            self.with_runs.add(thread)
        same_place = self._conn.execute(
            "SELECT turnId FROM thread_turns WHERE threadId = ? AND turnNumber = ? LIMIT 1", (thread, number)
        ).fetchone()
        if same_place is not None:
            placed = same_place[0]
        elif run:
            placed = f"{thread}/turn-{number}"
        else:
            placed = turn
        self._conn.execute(
            "INSERT INTO thread_turns (alias, threadId, turnNumber, turnId) VALUES (?, ?, ?, ?)",
            (turn, thread, number, placed),
        )
        self._turns[turn] = placed
        self._filed[turn] = (placed, number)
        return placed, number

    def _file_call(self, call: str, turn: str, own: str, identity: Any, aliased: bool) -> str:
        """The call stored for call id `call` of `turn`: the one it was filed as, else the turn's call
        with the same identity (told by another channel), else `own`. `aliased`: the thread has exec
        runs (else a call is itself, and only its identity is filed, for a later run to meet)."""
        stored = self._calls.get(call)
        if stored is not None:
            return stored
        if not aliased:
            if type(identity) is str:
                self._conn.execute(
                    "INSERT OR IGNORE INTO thread_calls (alias, turnId, identity, callId)"
                    " VALUES (?, ?, ?, ?)",
                    (call, turn, identity, call),
                )
            self._calls[call] = call
            return call
        found = self._conn.execute("SELECT callId FROM thread_calls WHERE alias = ?", (call,)).fetchone()
        if found is not None:
            stored = found[0]
        elif type(identity) is str:
            same = self._conn.execute(
                "SELECT callId FROM thread_calls WHERE turnId = ? AND identity = ? LIMIT 1", (turn, identity)
            ).fetchone()
            stored = own if same is None else same[0]
            self._conn.execute(
                "INSERT INTO thread_calls (alias, turnId, identity, callId) VALUES (?, ?, ?, ?)",
                (call, turn, identity, stored),
            )
        else:
            stored = own
        self._calls[call] = stored
        return stored

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

    def _set(self, thread: str, row: list[Any], column: int, value: str | int) -> None:
        row[column] = value
        name = ("conversationId", "rateLimitSource", "model", "lastTurnId", "codexTurns", "execTurns")[column]
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
        return bool(row[1] == channel)
