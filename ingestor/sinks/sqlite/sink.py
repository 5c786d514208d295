"""The embedded store: SQLite, same tables and columns as Convex, same merge rules.

One transaction per batch, run in a worker thread so the event loop keeps reading. Append tables
insert with `INSERT OR IGNORE` on their unique `key` (and (callId, stream, seq) for chunks), so a
replay adds nothing; upserts read the stored row once per batch, merge in memory with the pure rules
of `ingestor.sinks.sqlite.merge`, and write each changed row once.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from ingestor.errors import SinkError
from ingestor.logging import get_logger
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
from ingestor.sinks.sqlite.schema import TABLES, Table
from ingestor.sinks.sqlite.threads import Threads

log = get_logger("ingestor.sinks.sqlite")

SCHEMA_VERSION: Final = 3
"""2: the `threads` table; chunks numbered by the store. 3: `thread_turns`, `thread_calls` and the
threads' turn counts (exec runs meet their session file); `conversations.forkedFromThreadId` and
`forkedFromUsage`. An older store gains the tables and columns when a writer opens it."""
LOCKED_RETRY: Final = 1.0
"""Seconds between attempts while another process holds the store beyond the busy timeout."""
PAGE_SIZE: Final = 8192


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
        create_table, *indexes = table.ddl()
        conn.execute(create_table)
        _add_new_columns(conn, table)  # before the indexes, which may name a new column
        for statement in indexes:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("COMMIT")
    return conn


def _add_new_columns(conn: sqlite3.Connection, table: Table) -> None:
    """A store made by an earlier version gets the columns added since (all optional: old rows keep
    them unknown)."""
    present = {row[1] for row in conn.execute(f"PRAGMA table_info({table.name})")}
    for column in table.columns:
        if column.name not in present:
            assert not column.required, f"{table.name}.{column.name}: a new column must be optional"
            conn.execute(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.sql_type}")


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
        self._checkpoint_failing = False
        """Whether the last checkpoint failed (logged once per incident)."""
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
        except sqlite3.OperationalError as error:
            # E.g. every file descriptor taken by producers (its first checkpoint opens the WAL): a
            # skipped checkpoint only lets the WAL grow until the next one or the writer's backstop.
            if not self._checkpoint_failing:
                self._checkpoint_failing = True
                log.warning("background checkpoint failed: retried with the next ones", error=str(error))
        else:
            if self._checkpoint_failing:
                self._checkpoint_failing = False
                log.info("background checkpoints work again")
        finally:
            self._checkpointing = False

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._checkpointer.close, limiter=self._checkpoint_limiter)
        # The writer closes last: closing the last connection checkpoints and removes the WAL.
        await anyio.to_thread.run_sync(self._conn.close, limiter=self._limiter)


def _open_connections(path: str | Path, create_parent: bool) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """The writer and the checkpointer; SinkError, naming the path and what to do, when the store
    cannot be opened for writing."""
    try:
        if create_parent:
            # The per-user default's directory (the store holds prompts and code: its owner's only).
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        conn = connect(path)
        return conn, sqlite3.connect(path, check_same_thread=False)
    except (OSError, sqlite3.Error) as error:
        raise SinkError(
            f"cannot write the SQLite store {path}: {_open_failure(path, error)}; "
            "choose another with --sink sqlite:PATH"
        ) from error


def _open_failure(path: str | Path, error: OSError | sqlite3.Error) -> str:
    if isinstance(error, FileNotFoundError):
        return f"the directory {Path(path).parent} does not exist"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return f"{error} (is it an ingestor store?)"


@asynccontextmanager
async def open_sqlite_sink(path: str | Path, *, create_parent: bool = False) -> AsyncIterator[SqliteSink]:
    """The embedded store at `path`, ready to write; `create_parent`: make its directory first."""
    conn, checkpointer = await anyio.to_thread.run_sync(_open_connections, path, create_parent)
    try:
        async with anyio.create_task_group() as task_group:
            sink = SqliteSink(conn, checkpointer, task_group)
            yield sink
    finally:
        with anyio.CancelScope(shield=True):
            await sink.aclose()
