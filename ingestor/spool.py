"""The durable FIFO between the pipeline and Convex: one SQLite file (WAL) in the state directory.

Operations are appended before `Sink.write()` returns, read back in batches in arrival order, and
deleted once Convex has confirmed them. Nothing of the backlog is kept in memory: a batch is read
from disk when it is about to be sent. All methods are blocking; the sink calls them from a worker
thread, one at a time.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

FILENAME: Final = "spool.sqlite3"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    enqueued_at INTEGER NOT NULL,  -- epoch ms: the age trigger and the delivery-latency metric
    size INTEGER NOT NULL,         -- len(body), kept apart so totals never read the bodies
    body BLOB NOT NULL             -- one operation, JSON as sent to Convex
)
"""


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    enqueued_at: int
    body: bytes


class SpoolInUseError(RuntimeError):
    """Another process has this spool open."""


class Spool:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # One process per spool: two daemons draining one FIFO would interleave their batches and
        # lose the per-conversation order. flock is released by the kernel if the process dies.
        self._owner = path.with_name(path.name + ".lock").open("a+b")
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._owner.close()
            raise SpoolInUseError(
                f"{path} is in use by another ingestor; give each daemon its own --state-dir"
            ) from None
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per call.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # WAL + synchronous=FULL: a committed append survives a SIGKILL and a power cut alike.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        count, total = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM spool").fetchone()
        self._ops: int = count
        self._bytes: int = total

    @property
    def ops(self) -> int:
        return self._ops

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def append(self, bodies: Sequence[bytes], enqueued_at: int) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO spool (enqueued_at, size, body) VALUES (?, ?, ?)",
                    [(enqueued_at, len(body), body) for body in bodies],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._ops += len(bodies)
            self._bytes += sum(len(body) for body in bodies)

    def peek(self, max_ops: int, max_bytes: int) -> list[Row]:
        """The oldest ops, at most `max_ops` and `max_bytes` (but always at least one if any)."""
        rows: list[Row] = []
        size = 0
        with self._lock:
            # Iterating the cursor steps row by row: we stop reading as soon as the batch is full.
            cursor = self._db.execute("SELECT seq, enqueued_at, body FROM spool ORDER BY seq")
            try:
                for seq, enqueued_at, body in cursor:
                    if rows and size + len(body) > max_bytes:
                        break
                    rows.append(Row(seq, enqueued_at, body))
                    size += len(body)
                    if len(rows) >= max_ops:
                        break
            finally:
                cursor.close()
        return rows

    def head_enqueued_at(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT enqueued_at FROM spool ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def delete_through(self, seq: int) -> None:
        """Forget every op up to and including `seq` (the delivery loop confirms in FIFO order)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                count, total = self._db.execute(
                    "SELECT count(*), coalesce(sum(size), 0) FROM spool WHERE seq <= ?", (seq,)
                ).fetchone()
                self._db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._ops -= count
            self._bytes -= total

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._owner.close()
