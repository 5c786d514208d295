"""The embedded store: SQLite, same tables and columns as Convex, same merge rules.

One transaction per batch (`ingestor.sinks.sqlite.apply`), run in a worker thread so the event loop
keeps reading; the schema made or brought up to date when the store is opened.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from ingestor.errors import SinkError
from ingestor.logging import get_logger
from ingestor.ops import Op
from ingestor.sinks.sqlite.apply import BatchOutcome, apply_batches
from ingestor.sinks.sqlite.schema import TABLES, Table

log = get_logger("ingestor.sinks.sqlite")

SCHEMA_VERSION: Final = 3
"""2: the `threads` table; chunks numbered by the store. 3: `thread_turns`, `thread_calls` and the
threads' turn counts (exec runs meet their session file); `conversations.forkedFromThreadId` and
`forkedFromUsage`. An older store gains the tables and columns when a writer opens it."""
LOCKED_RETRY: Final = 1.0
"""Seconds between attempts while another process holds the store beyond the busy timeout."""
PAGE_SIZE: Final = 8192


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
