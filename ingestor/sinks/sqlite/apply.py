"""The embedded store's write side: one batch of ops applied in one transaction.

Append tables insert with `INSERT OR IGNORE` on their unique `key` (and (callId, stream, seq) for
chunks), so a replay adds nothing; upserts read the stored row once per batch, merge in memory with
the pure rules of `ingestor.sinks.sqlite.merge`, and write each changed row once. What one stream
cannot know (a thread's conversation, turn ordinals, chunk numbers) is decided here, in the same
transaction (docs/operations.md, "Across processes and channels").
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ingestor.ops import OP_TABLE, TURN_TERMINAL, Op
from ingestor.sinks.json_text import dumps_json
from ingestor.sinks.sqlite.merge import apply_upsert
from ingestor.sinks.sqlite.rows import (
    PLANS,
    Rejected,
    TablePlan,
    Upsert,
    check_required,
    coerce_args,
    event_row,
    insert_rows,
    loads_json,
    params,
    plain_row_of,
    with_column,
)
from ingestor.sinks.sqlite.threads import Threads


@dataclass(slots=True)
class BatchOutcome:
    counts: Counter[str] = field(default_factory=Counter)
    """Operations by result: inserted, updated, duplicate, rejected."""
    rejected: list[tuple[Op, str]] = field(default_factory=list)


def _load(conn: sqlite3.Connection, plan: TablePlan, identity: str) -> Upsert:
    found = conn.execute(plan.select_sql, (identity,)).fetchone()
    if found is None:
        return Upsert(None, None, None)
    stored: dict[str, Any] = {}
    for column, value in zip(plan.table.columns, found[1:], strict=True):
        if value is None:
            continue
        if column.kind == "strings":
            value = loads_json(value)
        stored[column.name] = value
    return Upsert(found[0], stored, stored)


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
    upserts: dict[tuple[str, str], Upsert] = {}
    unnumbered: list[Op] = []
    threads = Threads(conn)
    plans = PLANS
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
                            args = with_column(args, "turnId", running)
                    elif name != "appendEvent" or thread in threads.with_runs:
                        # (A raw event of a thread without exec runs is in its own turn: most ops.)
                        args = threads.place(thread, op, args)
            if name == "appendEvent":
                event = event_row(args, op["key"])
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
                plain_row = plain_row_of(plan, args, op["key"])
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
                    check_required(plan, values)
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
            check_required(plan, row)
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
        insert_rows(conn, plans[table_name], rows)
        inserted = conn.total_changes - before
        for status, count in (("inserted", inserted), ("duplicate", len(rows) - inserted)):
            if count:
                counts[status] += count


_TURN_SCOPED: Final = frozenset({"appendMessage", "appendReasoningSection"})
"""Appends whose key is their identity within their turn: stored as `<key>@<turnId>`, the turn the
store filed them in (an exec run's turn is the store's decision)."""


def _close_calls_of_ended_turns(conn: sqlite3.Connection, upserts: Mapping[tuple[str, str], Upsert]) -> None:
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


_IN_GROUP: Final = 500
"""Keys per `IN (...)` look-up (SQLite allows 32,766 parameters; smaller groups plan as well)."""


def _number_chunks(conn: sqlite3.Connection, ops: Sequence[Op], outcome: BatchOutcome) -> list[list[Any]]:
    """Rows for chunks sent without a `seq`: the store numbers each call's chunks in arrival order
    (after the highest stored), in the transaction that checks their keys, so a call continued by a
    second process or connection goes on where the first stopped. A call keeps the chunks of one
    encoding, its first chunk's: app-server 0.63 streamed each delta twice (v2 text, legacy bytes)."""
    plan = PLANS["command_chunks"]
    valid: list[tuple[str, dict[str, Any]]] = []
    for op in ops:
        try:
            key = op["key"]
            if type(key) is not str or not key:
                raise Rejected("key: expected a non-empty string")
            values = coerce_args(plan, op["args"])
            values["key"] = key
            values["seq"] = 0  # a stand-in for the required check; assigned below
            check_required(plan, values)
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


def _write_upserts(conn: sqlite3.Connection, upserts: Mapping[tuple[str, str], Upsert]) -> None:
    inserts: dict[str, list[list[Any]]] = {}
    updates: dict[str, list[list[Any]]] = {}
    for (table_name, _), pending in upserts.items():
        if pending.row is None or pending.row == pending.stored:
            continue
        names = PLANS[table_name].names
        if pending.rowid is None:
            inserts.setdefault(table_name, []).append(params(names, pending.row))
        else:
            updates.setdefault(table_name, []).append([*params(names, pending.row), pending.rowid])
    for table_name, rows in inserts.items():
        conn.executemany(PLANS[table_name].insert_sql, rows)
    for table_name, rows in updates.items():
        conn.executemany(PLANS[table_name].update_sql, rows)
