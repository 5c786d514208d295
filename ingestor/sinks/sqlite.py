"""The embedded store: SQLite, same tables and columns as Convex, same merge rules.

One transaction per batch, run in a worker thread so the event loop keeps reading. Append tables
insert with `INSERT OR IGNORE` on their unique `key` (and (callId, stream, seq) for chunks), so a
replay adds nothing; upserts read the stored row once per batch, merge in memory with the pure rules
of `ingestor.sinks.merge`, and write each changed row once.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from ingestor.logging import get_logger
from ingestor.ops import OP_TABLE, TURN_TERMINAL, EventArgs, Op
from ingestor.sinks.json_text import dumps_json
from ingestor.sinks.merge import apply_upsert
from ingestor.sinks.schema import TABLES, Column, Table

log = get_logger("ingestor.sinks.sqlite")

SCHEMA_VERSION: Final = 3
"""2: the `threads` table; chunks numbered by the store. 3: `thread_turns`, `thread_calls` and the
threads' turn counts (exec runs meet their session file)."""
LOCKED_RETRY: Final = 1.0
"""Seconds between attempts while another process holds the store beyond the busy timeout."""
PAGE_SIZE: Final = 8192
_INT64: Final = 2**63


class Rejected(Exception):
    """An operation the store cannot hold (deterministic: retrying cannot help)."""


def loads_json(text: str) -> Any:
    # The stdlib, not orjson: orjson reads integers beyond 64 bits as floats, losing digits.
    return json.loads(text)


def _encode(column: Column, value: Any) -> Any:
    """A present argument as the store holds it; `Rejected` when Convex's validator would refuse it."""
    kind = column.kind
    kind_of = type(value)
    if kind == "text":
        if kind_of is str:
            return value
    elif kind == "int" or kind == "num":
        if (kind_of is int and -_INT64 <= value < _INT64) or (kind_of is float and math.isfinite(value)):
            return value
        if kind_of is int:
            raise Rejected(f"{column.name}: integer beyond 64 bits")
    elif kind == "bool":
        if kind_of is bool:
            return value
    elif kind == "strings":
        if kind_of is list and all(type(v) is str for v in value):
            return value  # kept as a list: the merge rules look at it; JSON text when bound
    else:
        return dumps_json(value)  # `any` columns are opaque JSON text from here on
    raise Rejected(f"{column.name}: expected {kind}, got {kind_of.__name__}")


@dataclass(frozen=True, slots=True)
class _TablePlan:
    """Precomputed per table: what the per-op loop needs, and the SQL."""

    table: Table
    names: tuple[str, ...]
    columns: dict[str, Column]
    kinds: dict[str, str]
    list_columns: tuple[str, ...]
    json_siblings: dict[str, Column]
    required: frozenset[str]
    plain: dict[str, tuple[int, type]] | None
    """Append tables: each text or int column's position in a row (key first) and its value's type;
    None for upsert tables, and for tables with other kinds (those take the general path)."""
    required_positions: tuple[int, ...]
    insert_sql: str
    insert_rows_sql: str
    """`insert_sql` for `ROWS_PER_INSERT` rows at once."""
    update_sql: str
    select_sql: str

    @classmethod
    def of(cls, table: Table) -> _TablePlan:
        names = table.column_names
        verb = "INSERT" if table.identity else "INSERT OR IGNORE"
        # A JSON column may be bound as the UTF-8 bytes of its text (a raw event's own line): the CAST
        # stores them as that TEXT, byte for byte, sparing a decode to `str` and the encode back.
        marks = ", ".join("CAST(? AS TEXT)" if c.kind == "json" else "?" for c in table.columns)
        insert = f"{verb} INTO {table.name} ({', '.join(names)}) VALUES "
        plain_types = {"text": str, "int": int}
        plain = (
            {c.name: (i, plain_types[c.kind]) for i, c in enumerate(table.columns) if c.name != "key"}
            if table.identity is None and all(c.kind in plain_types for c in table.columns)
            else None
        )
        return cls(
            table=table,
            names=names,
            columns={c.name: c for c in table.columns},
            kinds={c.name: c.kind for c in table.columns},
            list_columns=tuple(c.name for c in table.columns if c.kind == "strings"),
            json_siblings={c.name + "Json": c for c in table.columns if c.kind == "json"},
            required=frozenset(c.name for c in table.columns if c.required),
            plain=plain,
            required_positions=tuple(i for i, c in enumerate(table.columns) if c.required),
            insert_sql=f"{insert}({marks})",
            insert_rows_sql=insert + ", ".join([f"({marks})"] * ROWS_PER_INSERT),
            update_sql=f"UPDATE {table.name} SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
            select_sql=f"SELECT id, {', '.join(names)} FROM {table.name} WHERE {table.identity} = ?",
        )


ROWS_PER_INSERT: Final = 50
"""Rows per INSERT statement (`VALUES (…), (…), …`): one statement run per 50 rows instead of one per
row (measured: events ~8% cheaper to insert; more rows per statement gained nothing more)."""

_PLANS: Final = {name: _TablePlan.of(table) for name, table in TABLES.items()}


def coerce_args(plan: _TablePlan, args: Mapping[str, Any]) -> dict[str, Any]:
    """An op's args as column values: validated, `<column>Json` folded into its column."""
    values: dict[str, Any] = {}
    kinds = plan.kinds
    for name, value in args.items():
        # Inline fast paths for the common kinds: this loop runs for every column of every op.
        # Anything they do not settle takes the general path below, unchanged.
        kind = kinds.get(name)
        if kind == "text":
            if type(value) is str:
                values[name] = value
                continue
        elif kind == "int" or kind == "num":
            value_type = type(value)
            if value_type is int:
                if -_INT64 <= value < _INT64:
                    values[name] = value
                    continue
            elif value_type is float and math.isfinite(value):
                values[name] = value
                continue
        elif kind == "json" and value is not None:
            values[name] = dumps_json(value)  # `any` columns are opaque JSON text from here on
            continue
        column = plan.columns.get(name)
        if column is None:
            column = plan.json_siblings.get(name)
            if column is None:
                raise Rejected(f"unknown column {name!r} for {plan.table.name}")
            if value is None:
                continue
            if type(value) is not str:
                raise Rejected(f"{name}: expected JSON text")
            values[column.name] = value  # already JSON text: stored as it arrived
        elif value is not None:
            values[name] = _encode(column, value)
        elif column.kind == "json" and column.required:
            values.setdefault(name, "null")  # a JSON null payload is a value, not an absence
    return values


def _sql_value(value: Any) -> Any:
    return dumps_json(value) if type(value) is list else value


def _params(names: Iterable[str], row: Mapping[str, Any]) -> list[Any]:
    """Bind parameters for a full row (upserts: lists are still Python lists here)."""
    return [_sql_value(row.get(n)) for n in names]


def _check_required(plan: _TablePlan, row: Mapping[str, Any]) -> None:
    if row.keys() >= plan.required:
        return
    missing = plan.required.difference(row)
    raise Rejected(f"missing required column(s) {', '.join(sorted(missing))}")


@dataclass(slots=True)
class _Upsert:
    rowid: int | None
    stored: dict[str, Any] | None
    row: dict[str, Any] | None


@dataclass(slots=True)
class BatchOutcome:
    counts: Counter[str] = field(default_factory=Counter)
    """Operations by result: inserted, updated, duplicate, rejected."""
    rejected: list[tuple[Op, str]] = field(default_factory=list)


def _load(conn: sqlite3.Connection, plan: _TablePlan, identity: str) -> _Upsert:
    found = conn.execute(plan.select_sql, (identity,)).fetchone()
    if found is None:
        return _Upsert(None, None, None)
    stored: dict[str, Any] = {}
    for column, value in zip(plan.table.columns, found[1:], strict=True):
        if value is None:
            continue
        if column.kind == "strings":
            value = loads_json(value)
        stored[column.name] = value
    return _Upsert(found[0], stored, stored)


def apply_ops(conn: sqlite3.Connection, ops: Sequence[Op]) -> BatchOutcome:
    """Apply a batch in one transaction (blocking: run it in a worker thread)."""
    return apply_batches(conn, [ops])


def apply_batches(conn: sqlite3.Connection, batches: Sequence[Sequence[Op]]) -> BatchOutcome:
    """Apply batches one after the other, all in one transaction: the same rows and results as one
    `apply_ops` each, for one commit (a commit writes every page the batch touched to the WAL, and
    the random idempotency keys touch pages all over their index: fewer, larger commits write less).

    Applied as one sequence of ops: an upsert's row is read once per transaction, each table gets
    one `executemany`; rows are written in the same order, so they get the same ids."""
    outcome = BatchOutcome()
    ops: Sequence[Op] = batches[0] if len(batches) == 1 else [op for batch in batches for op in batch]
    conn.execute("BEGIN IMMEDIATE")
    try:
        _apply(conn, ops, outcome)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return outcome


def _apply(conn: sqlite3.Connection, ops: Sequence[Op], outcome: BatchOutcome) -> None:
    counts = outcome.counts
    appends: dict[str, list[list[Any]]] = {}
    upserts: dict[tuple[str, str], _Upsert] = {}
    unnumbered: list[Op] = []
    threads = _Threads(conn)
    plans = _PLANS
    op_table = OP_TABLE
    events = appends["events_raw"] = []
    for op in ops:
        try:
            name = op["op"]
            args: Mapping[str, Any] = op["args"]
            thread = op.get("thread")
            if thread is not None:
                if name == "appendRateLimit":
                    if not threads.keeps_rate_limits(thread, op.get("channel")):
                        counts["duplicate"] += 1  # the thread's limits as another channel reported them
                        continue
                    args = threads.latest_turn(thread, threads.place(thread, op, args))
                elif name == "appendUsageSnapshot":
                    args = threads.latest_turn(thread, threads.place(thread, op, args))
                else:
                    args = threads.resolve(thread, args)
                    if "model" in op:
                        threads.remember_model(thread, op["model"])
                    elif "unknown_turn" in op and args.get("turnId") is None:
                        running = threads.running_turn(thread, upserts)
                        if running is not None:
                            args = _with(args, "turnId", running)
                    elif name != "appendEvent" or thread in threads.with_runs:
                        # (A raw event of a thread without exec runs is in its own turn: most ops.)
                        args = threads.place(thread, op, args)
            if name == "appendEvent":
                event = _event_row(args, op["key"])
                if event is not None:
                    events.append(event)
                    continue
            elif name == "appendCommandChunk" and args.get("seq") is None:
                unnumbered.append(op)  # numbered once the other appends are in (_number_chunks)
                continue
            table_name = op_table.get(name)
            if table_name is None:
                raise Rejected(f"unknown operation {name!r}")
            plan = plans[table_name]
            if plan.plain is not None:
                plain_row = _plain_row(plan, args, op["key"])
                if plain_row is not None:
                    rows = appends.get(table_name)
                    if rows is None:
                        rows = appends[table_name] = []
                    rows.append(plain_row)
                    continue
            values = coerce_args(plan, args)
            identity_column = plan.table.identity
            if identity_column is None:
                key = op["key"]
                if type(key) is not str or not key:
                    raise Rejected("key: expected a non-empty string")
                if name in _TURN_SCOPED:
                    key = f"{key}@{values.get('turnId')}"
                values["key"] = key
                if not values.keys() >= plan.required:
                    _check_required(plan, values)
                for column in plan.list_columns:
                    if column in values:
                        values[column] = dumps_json(values[column])
                rows = appends.get(table_name)
                if rows is None:
                    rows = appends[table_name] = []
                rows.append(list(map(values.get, plan.names)))
                continue
            identity = values.get(identity_column)
            if identity is None:
                raise Rejected(f"missing {identity_column}")
            pending = upserts.get((table_name, identity))
            if pending is None:
                pending = upserts[(table_name, identity)] = _load(conn, plan, identity)
            if thread is not None and name == "upsertTurn":
                threads.turn(thread, values, pending.row is None)
            row, status = apply_upsert(table_name, pending.row, values)
            _check_required(plan, row)
            pending.row = row
            counts[status] += 1
        except Rejected as rejected:
            counts["rejected"] += 1
            outcome.rejected.append((op, str(rejected)))
    _write_upserts(conn, upserts)
    _close_calls_of_ended_turns(conn, upserts)
    if unnumbered:
        # After the other appends: a chunk someone numbered themselves (`app:appendCommandChunk`)
        # in this batch is counted in.
        appends["command_chunks"] = [
            *appends.get("command_chunks", ()),
            *_number_chunks(conn, unnumbered, outcome),
        ]
    for table_name, rows in appends.items():
        before = conn.total_changes
        _insert(conn, plans[table_name], rows)
        inserted = conn.total_changes - before
        for status, count in (("inserted", inserted), ("duplicate", len(rows) - inserted)):
            if count:
                counts[status] += count


_TURN_SCOPED: Final = frozenset({"appendMessage", "appendReasoningSection"})
"""Appends whose key is their identity within their turn: stored as `<key>@<turnId>`, the turn the
store filed them in (an exec run's turn is the store's decision)."""


def _close_calls_of_ended_turns(conn: sqlite3.Connection, upserts: Mapping[tuple[str, str], _Upsert]) -> None:
    """Merge rule 6: a turn that has ended ends its calls still running, `canceled` at the turn's end
    (Codex sends no end for a call its turn cut short), whichever process saw the call start."""
    for (table, turn_id), pending in upserts.items():
        row = pending.row
        if table != "turns" or row is None or row.get("status") not in TURN_TERMINAL:
            continue
        conn.execute(
            "UPDATE commands SET status = 'canceled', endedAt = coalesce(endedAt, ?)"
            " WHERE turnId = ? AND status = 'running'",
            (row.get("endedAt"), turn_id),
        )


def _with(args: Mapping[str, Any], name: str, value: Any) -> Mapping[str, Any]:
    """`args` with one column changed, a raw event's still carrying its line's own text."""
    if isinstance(args, EventArgs):
        event = EventArgs(args)
        event.line_json = args.line_json  # still this payload's own text
        event[name] = value
        return event
    return {**args, name: value}


def _under_run(value: str, turn: str, placed: str, run: bool) -> str:
    """An id under an exec run (`<run>/<item id>`) as the same id under the run's stored turn."""
    if run and value.startswith(turn + "/"):
        return placed + value[len(turn) :]
    return value


class _Threads:
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
            args = _with(args, "turnNumber", number)
        else:
            placed = self._stored_turn(turn) if aliased else turn
        if placed != turn:
            args = _with(args, "turnId", placed)
        if name == "upsertCommand":
            call = args.get("callId")
            if type(call) is str:
                own = _under_run(call, turn, placed, run)
                stored = self._file_call(call, placed, own, op.get("call"), aliased)
                if stored != call:
                    args = _with(args, "callId", stored)
        elif run and name == "appendReasoningSection":
            item = args.get("itemId")
            if type(item) is str:
                args = _with(args, "itemId", _under_run(item, turn, placed, run))
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
        return _with(args, "conversationId", filed)

    def running_turn(self, thread: str, upserts: Mapping[tuple[str, str], _Upsert]) -> str | None:
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
        return _with(args, "turnId", latest)

    def keeps_rate_limits(self, thread: str, channel: Any) -> bool:
        if type(channel) is not str:
            return True
        row = self._row(thread)
        if row[1] is None:
            self._set(thread, row, 1, channel)
        return bool(row[1] == channel)


_IN_GROUP: Final = 500
"""Keys per `IN (...)` look-up (SQLite allows 32,766 parameters; smaller groups plan as well)."""


def _number_chunks(conn: sqlite3.Connection, ops: Sequence[Op], outcome: BatchOutcome) -> list[list[Any]]:
    """Rows for chunks sent without a `seq`: the store numbers each call's chunks in arrival order
    (after the highest stored), in the transaction that checks their keys, so a call continued by a
    second process or connection goes on where the first stopped. A call keeps the chunks of one
    encoding, its first chunk's: app-server 0.63 streamed each delta twice (v2 text, legacy bytes)."""
    plan = _PLANS["command_chunks"]
    valid: list[tuple[str, dict[str, Any]]] = []
    for op in ops:
        try:
            key = op["key"]
            if type(key) is not str or not key:
                raise Rejected("key: expected a non-empty string")
            values = coerce_args(plan, op["args"])
            values["key"] = key
            values["seq"] = 0  # a stand-in for the required check; assigned below
            _check_required(plan, values)
            valid.append((key, values))
        except Rejected as rejected:
            outcome.counts["rejected"] += 1
            outcome.rejected.append((op, str(rejected)))
    stored: set[str] = set()
    keys = [key for key, _ in valid]
    for start in range(0, len(keys), _IN_GROUP):
        group = keys[start : start + _IN_GROUP]
        marks = ", ".join("?" * len(group))
        stored.update(
            k for (k,) in conn.execute(f"SELECT key FROM command_chunks WHERE key IN ({marks})", group)
        )
    calls: dict[str, tuple[int, str | None]] = {}
    rows: list[list[Any]] = []
    for key, values in valid:
        if key in stored:
            outcome.counts["duplicate"] += 1
            continue
        stored.add(key)
        call = values["callId"]
        found = calls.get(call)
        if found is None:
            top, first_encoding = conn.execute(
                "SELECT max(seq), (SELECT encoding FROM command_chunks WHERE callId = ?1 ORDER BY seq"
                " LIMIT 1) FROM command_chunks WHERE callId = ?1",
                (call,),
            ).fetchone()
            found = (
                -1 if top is None else top,
                first_encoding if top is not None else values.get("encoding"),
            )
        seq, encoding = found
        if values.get("encoding") != encoding:
            outcome.counts["duplicate"] += 1  # the call's output as another channel streamed it
            continue
        values["seq"] = seq + 1
        calls[call] = (seq + 1, encoding)
        rows.append(list(map(values.get, plan.names)))
    return rows


def _insert(conn: sqlite3.Connection, plan: _TablePlan, rows: Sequence[Sequence[Any]]) -> None:
    """Insert `rows` in order: whole groups of `ROWS_PER_INSERT` per statement, the rest one by one."""
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    if whole:
        flat = list(chain.from_iterable(rows[:whole]))
        step = ROWS_PER_INSERT * len(plan.names)
        conn.executemany(plan.insert_rows_sql, [flat[i : i + step] for i in range(0, len(flat), step)])
    if whole < len(rows):
        conn.executemany(plan.insert_sql, rows[whole:])


def _plain_row(plan: _TablePlan, args: Mapping[str, Any], key: Any) -> list[Any] | None:
    """The row of an append whose values are all of exactly their column's type (text or int) and
    whose required columns are all there, as the general path would make it; None for anything else
    (which takes the general path, and its errors)."""
    plain = plan.plain
    assert plain is not None
    if type(key) is not str or not key:
        return None
    row: list[Any] = [None] * len(plan.names)
    row[0] = key
    for name, value in args.items():
        slot = plain.get(name)
        if slot is None:
            return None
        if value is None:
            continue
        position, kind = slot
        value_type = type(value)
        if value_type is not kind or (value_type is int and not -_INT64 <= value < _INT64):
            return None
        row[position] = value
    for position in plan.required_positions:
        if row[position] is None:
            return None
    return row


_EVENT_COLUMNS: Final = ("key", "conversationId", "turnId", "method", "payload", "receivedAt")
assert _PLANS["events_raw"].names == _EVENT_COLUMNS


def _event_row(args: Mapping[str, Any], key: Any) -> list[Any] | None:
    """The `events_raw` row of a plain `appendEvent` (most ops), as `coerce_args` would make it; None
    for anything else (`payloadJson`, unknown columns, unusual types), which takes the general path."""
    cid = args.get("conversationId")
    method = args.get("method")
    at = args.get("receivedAt")
    if (
        type(key) is not str
        or not key
        or type(cid) is not str
        or type(method) is not str
        or type(at) is not int
        or not -_INT64 <= at < _INT64
        or "payload" not in args
    ):
        return None
    turn = args.get("turnId")
    if turn is not None and type(turn) is not str:
        return None
    if len(args) != (5 if "turnId" in args else 4):
        return None
    payload = args["payload"]
    if type(args) is EventArgs:
        line_json = args.line_json
        if line_json is not None and line_json[0] is payload:
            # The payload is the whole input line: store its own JSON text (exact), not a re-encoding.
            # Bound as its UTF-8 bytes (valid: the line parsed as JSON), stored as TEXT (`insert_sql`).
            return [key, cid, turn, method, line_json[1], at]
    return [key, cid, turn, method, "null" if payload is None else dumps_json(payload), at]


def _write_upserts(conn: sqlite3.Connection, upserts: Mapping[tuple[str, str], _Upsert]) -> None:
    inserts: dict[str, list[list[Any]]] = {}
    updates: dict[str, list[list[Any]]] = {}
    for (table_name, _), pending in upserts.items():
        if pending.row is None or pending.row == pending.stored:
            continue
        names = _PLANS[table_name].names
        if pending.rowid is None:
            inserts.setdefault(table_name, []).append(_params(names, pending.row))
        else:
            updates.setdefault(table_name, []).append([*_params(names, pending.row), pending.rowid])
    for table_name, rows in inserts.items():
        conn.executemany(_PLANS[table_name].insert_sql, rows)
    for table_name, rows in updates.items():
        conn.executemany(_PLANS[table_name].update_sql, rows)


def connect(path: str | Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open the store; the writer also creates the schema (idempotent)."""
    if read_only:
        conn = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn
    if str(path) != ":memory:":
        # The store holds prompts, code and command output: a new one is its owner's only, whatever
        # the umask (SQLite gives its -wal and -shm files the database file's mode).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    # isolation_level=None: transactions are ours (one per batch), not the sqlite3 module's.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # Only takes effect while the file is still empty (a new store); an existing one keeps its size.
    # Larger pages: fewer B-tree pages for the random keys of the `by_key` indexes to land on, so
    # shallower trees and fewer pages per commit (measured: a replay's inserts ~20% cheaper than 4 KiB).
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    # Random idempotency keys make index inserts touch pages all over: keep more of them cached.
    conn.execute("PRAGMA cache_size = -65536")
    # Checkpoints normally run in the background (SqliteSink); this automatic one, in the writer's
    # path, is a backstop for when they fall behind. The size limit trims the WAL file back after each.
    conn.execute("PRAGMA wal_autocheckpoint = 50000")
    conn.execute("PRAGMA journal_size_limit = 67108864")
    conn.execute("BEGIN IMMEDIATE")
    for table in TABLES.values():
        statements = table.ddl()
        conn.execute(statements[0])
        # A store made by an older version: its tables gain the (optional) columns added since.
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table.name})")}
        for column in table.columns:
            if column.name not in present:
                conn.execute(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.sql_type}")
        for statement in statements[1:]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("COMMIT")
    return conn


CHECKPOINT_EVERY_BATCHES: Final = 16
CHECKPOINT_EVERY_OPS: Final = 8192
"""A checkpoint starts after this many transactions or this many ops, whichever comes first: a few
small transactions (a live daemon) do not cost a disk sync each, and large ones (a replay, a burst)
are checkpointed while the writer goes on, rather than all at once when the store closes."""


class SqliteSink:
    """Use through `open_sqlite_sink`.

    WAL checkpoints (copying the log into the database file, and the only disk syncs under
    `synchronous=NORMAL`) run on a second connection in the background, every few transactions or
    thousand ops, so batches never wait for them and the disk syncs overlap the work; the writer's
    own automatic checkpoint is only a backstop.
    """

    def __init__(
        self, conn: sqlite3.Connection, checkpointer: sqlite3.Connection, task_group: TaskGroup
    ) -> None:
        self._conn = conn
        # One connection, one thread at a time; also keeps batches in order.
        self._limiter = anyio.CapacityLimiter(1)
        self._checkpointer = checkpointer
        self._checkpoint_limiter = anyio.CapacityLimiter(1)
        self._task_group = task_group
        self._batches = 0
        """Transactions since the last checkpoint started."""
        self._ops = 0
        """Ops since the last checkpoint started."""
        self._checkpointing = False
        self.counts: Counter[str] = Counter()

    async def write(self, ops: Sequence[Op]) -> None:
        await self.write_batches([ops])

    async def write_batches(self, batches: Sequence[Sequence[Op]]) -> None:
        """Several batches in one transaction (the batcher's way to hand over a burst)."""
        outcome = await self._apply_when_unlocked(batches)
        self.counts.update(outcome.counts)
        for op, reason in outcome.rejected:
            log.warning("op rejected", op=op["op"], key=op["key"], reason=reason)
        self._batches += 1  # transactions, really: what the WAL grows by
        self._ops += sum(map(len, batches))
        if (
            self._batches >= CHECKPOINT_EVERY_BATCHES or self._ops >= CHECKPOINT_EVERY_OPS
        ) and not self._checkpointing:
            self._checkpointing = True
            self._batches = self._ops = 0
            self._task_group.start_soon(self._checkpoint)

    async def _apply_when_unlocked(self, batches: Sequence[Sequence[Op]]) -> BatchOutcome:
        """Apply `batches`, waiting (input paused, logged once) while another process holds the
        store's write lock beyond the busy timeout: nothing read is dropped, nothing exits."""
        locked_since: float | None = None
        while True:
            try:
                outcome = await anyio.to_thread.run_sync(
                    apply_batches, self._conn, batches, limiter=self._limiter
                )
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                if locked_since is None:
                    locked_since = time.monotonic()
                    log.error(
                        "store locked by another process: input paused until it lets go", error=str(error)
                    )
                await anyio.sleep(LOCKED_RETRY)
                continue
            if locked_since is not None:
                log.info(
                    "store writable again: input resumed", waited_s=round(time.monotonic() - locked_since, 1)
                )
            return outcome

    async def _checkpoint(self) -> None:
        try:
            # PASSIVE: copies what it can without blocking the writer (or readers).
            await anyio.to_thread.run_sync(
                self._checkpointer.execute, "PRAGMA wal_checkpoint(PASSIVE)", limiter=self._checkpoint_limiter
            )
        finally:
            self._checkpointing = False

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._checkpointer.close, limiter=self._checkpoint_limiter)
        # The writer closes last: closing the last connection checkpoints and removes the WAL.
        await anyio.to_thread.run_sync(self._conn.close, limiter=self._limiter)


@asynccontextmanager
async def open_sqlite_sink(path: str | Path) -> AsyncIterator[SqliteSink]:
    conn = await anyio.to_thread.run_sync(connect, path)
    checkpointer = await anyio.to_thread.run_sync(lambda: sqlite3.connect(path, check_same_thread=False))
    try:
        async with anyio.create_task_group() as task_group:
            sink = SqliteSink(conn, checkpointer, task_group)
            yield sink
    finally:
        with anyio.CancelScope(shield=True):
            await sink.aclose()
