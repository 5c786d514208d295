"""A small in-memory store applying operations with the merge rules of docs/operations.md.

Used by the golden tests to turn the normalizer's operations into stored rows without any I/O, so
the expected rows hold independently of the SQLite and Convex sinks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from ingestor.ops import COMMAND_TERMINAL, OP_TABLE, TURN_TERMINAL, Op

UPSERT_ID = {"conversations": "conversationId", "turns": "turnId", "commands": "callId"}


def _status(table: str, old: Any, new: str) -> Any:
    terminal = TURN_TERMINAL if table == "turns" else COMMAND_TERMINAL
    if old in terminal:
        if table == "turns" and new in ("failed", "canceled") and new != old:
            return new
        return old
    return new


def _merge(table: str, row: dict[str, Any], args: dict[str, Any]) -> None:
    for name, value in args.items():
        if value is None:
            continue
        old = row.get(name)
        if old is None:
            row[name] = value
        elif name == "startedAt":
            row[name] = min(old, value)
        elif name in ("lastSeenAt", "endedAt"):
            row[name] = max(old, value)
        elif name == "status":
            row[name] = _status(table, old, value)
        elif name == "command" and table == "commands":
            if not (type(old) is list and old):
                row[name] = value
        elif name == "chunked":
            row[name] = bool(old or value)
        else:
            row[name] = value


class ReferenceStore:
    def __init__(self) -> None:
        self.tables: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in OP_TABLE.values()}
        self.results: list[str] = []
        self.threads: dict[str, str] = {}
        """threadId -> the conversation it was first filed under."""
        self.rate_limit_channels: dict[str, str] = {}
        self.models: dict[str, str] = {}
        self.latest_turns: dict[str, str] = {}
        self.turn_ids: dict[str, tuple[int, str]] = {}
        """Every id a turn is known by -> (its ordinal in the thread, the turn stored for it)."""
        self.turn_counts: dict[tuple[str, bool], int] = {}
        """(thread, exec run?) -> how many turns of that kind the thread has."""
        self.call_ids: dict[str, str] = {}
        self.call_identities: dict[tuple[str, str], str] = {}
        """(turn, the call's identity) -> the call stored for it."""
        self._thread_of: dict[str, str] = {}

    def apply(self, ops: Iterable[Op]) -> None:
        for op in ops:
            self.results.append(self._apply(op))

    def _apply(self, op: Op) -> str:
        table = OP_TABLE[op["op"]]
        rows = self.tables[table]
        args: dict[str, Any] = dict(op["args"])
        thread = op.get("thread")
        if thread is not None and "conversationId" in args:
            args["conversationId"] = self.threads.setdefault(thread, args["conversationId"])
        channel = op.get("channel")
        if (
            thread is not None
            and channel is not None
            and self.rate_limit_channels.setdefault(thread, channel) != channel
        ):
            return "duplicate"
        if thread is not None and table in ("usage_snapshots", "rate_limits") and "turnId" not in args:
            if thread not in self.latest_turns:
                return "rejected"
            args["turnId"] = self.latest_turns[thread]
        if thread is not None and op.get("unknown_turn") and args.get("turnId") is None:
            latest = self.latest_turns.get(thread)
            if latest is not None and self.tables["turns"][latest].get("status") == "running":
                args["turnId"] = latest
        if thread is not None and type(args.get("turnId")) is str:
            self._place(thread, op, args)
        if table in ("messages", "reasoning_sections"):
            op = cast(Op, {**op, "key": f"{op['key']}@{args.get('turnId')}"})
        if thread is not None and "model" in op:
            self.models[thread] = op["model"]
        if thread is not None and table == "turns":
            if args.get("model") is not None:
                self.models[thread] = args["model"]
            elif args["turnId"] not in rows and thread in self.models:
                args["model"] = self.models[thread]
            if args["turnId"] not in rows:
                self.latest_turns[thread] = args["turnId"]
        id_column = UPSERT_ID.get(table)
        if id_column is None:
            if op["key"] in rows:
                return "duplicate"
            if table == "command_chunks" and args.get("seq") is None:
                chunks = [r for r in rows.values() if r["callId"] == args["callId"]]
                if chunks and chunks[0].get("encoding") != args.get("encoding"):
                    return "duplicate"
                args["seq"] = len(chunks)
            elif table == "command_chunks" and any(
                (r["callId"], r["stream"], r["seq"]) == (args["callId"], args["stream"], args["seq"])
                for r in rows.values()
            ):
                return "rejected"
            rows[op["key"]] = {"key": op["key"], **args}
            return "inserted"
        ident = args[id_column]
        row = rows.get(ident)
        if row is None:
            row = dict(args)
            row.setdefault("startedAt", args.get("endedAt", args.get("lastSeenAt")))
            if table == "turns":
                row.setdefault("status", "running")
            if table == "commands":
                row.setdefault("command", [])
                row.setdefault("chunked", False)
            if table == "conversations":
                row.setdefault("lastSeenAt", row["startedAt"])
            rows[ident] = {k: v for k, v in row.items() if v is not None}
            self._close_calls(table, rows[ident])
            return "inserted"
        before = dict(row)
        _merge(table, row, args)
        self._close_calls(table, row)
        return "updated" if row != before else "duplicate"

    def _place(self, thread: str, op: Op, args: dict[str, Any]) -> None:
        """docs/operations.md: an exec run is the thread's turn of the same ordinal, a call told
        under two ids is the call of its turn with the same identity."""
        turn = args["turnId"]
        run = op.get("run") is True
        if op["op"] == "upsertTurn" and turn not in self.turn_ids:
            number = self.turn_counts.get((thread, run), 0) + 1
            self.turn_counts[thread, run] = number
            same = [
                t for a, (n, t) in self.turn_ids.items() if n == number and self._thread_of.get(a) == thread
            ]
            placed = same[0] if same else f"{thread}/turn-{number}" if run else turn
            self.turn_ids[turn] = (number, placed)
            self._thread_of[turn] = thread
        placement: tuple[int | None, str] = self.turn_ids.get(turn, (None, turn))
        ordinal, placed = placement
        args["turnId"] = placed
        if op["op"] == "upsertTurn":
            args["turnNumber"] = ordinal

        def under_run(value: str) -> str:
            return placed + value[len(turn) :] if run and value.startswith(turn + "/") else value

        if op["op"] == "upsertCommand":
            call = args["callId"]
            if call not in self.call_ids:
                identity = op.get("call")
                stored = under_run(call)
                if identity is not None:
                    stored = self.call_identities.setdefault((placed, identity), stored)
                    self.call_ids[call] = stored
            args["callId"] = self.call_ids.get(call, under_run(call))
        elif op["op"] == "appendReasoningSection" and run:
            args["itemId"] = under_run(args["itemId"])

    def _close_calls(self, table: str, row: dict[str, Any]) -> None:
        """Merge rule 6: an ended turn ends its commands still running."""
        if table != "turns" or row.get("status") not in TURN_TERMINAL:
            return
        for command in self.tables["commands"].values():
            if command["turnId"] == row["turnId"] and command.get("status") == "running":
                command["status"] = "canceled"
                command.setdefault("endedAt", row.get("endedAt"))
