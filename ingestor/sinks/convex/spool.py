"""The durable FIFO between the pipeline and Convex, in the state directory.

Operations are appended before `Sink.write()` returns, read back in batches in arrival order, and
deleted once Convex has confirmed them. Nothing of the backlog is kept in memory: a batch is read
from disk when it is about to be sent. All methods are blocking; the sink calls them from a worker
thread, one at a time.

Storage: the encoded ops go to append-only segment files (`spool.sqlite3.<n>.seg`, a new one every
`SEGMENT_BYTES`), written once and fsynced; an SQLite table (WAL, `synchronous=FULL`) indexes them,
one row per appended group of ops (a pipeline batch, cut to what one request may carry), committed
after the data is on disk. A segment is deleted once no row refers to it. Bytes a crash left in a
segment without a row are never read. The ops of a row are stored as sent, joined by `SEP` (`,` and
a newline: valid JSON between array items, and never inside compact JSON, where a newline is always
escaped), so a request body is the rows' data joined, and a row is split into its ops only when a
batch must be bisected or is larger than a request. Ops are numbered consecutively across rows: a
row's `seq` is the number of its first op, and confirming up to an op in the middle of a row (a
bisected batch) moves that row's start past it, so what was confirmed is not sent again.
Confirmations may be committed without an fsync (`delete_through(durable=False)`): a power cut can
undo them (never an append), and the ops are then sent again; the WAL is synced before a segment
file is deleted, so no row ever outlives its data.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ingestor.logging import get_logger
from ingestor.sinks.convex.spool_batch import SEP, Batch, ops_within
from ingestor.sinks.convex.spool_disk import (
    DiskFullError,
    is_disk_full,
    keep_reserve,
    release_reserve,
    write_all,
)
from ingestor.sinks.convex.spool_recovery import convert, old_format, quarantine_index, quarantine_short_rows

FILENAME: Final = "spool.sqlite3"
log = get_logger("ingestor.spool")

SEGMENT_BYTES: Final = 64 * 1024 * 1024
"""A new segment file is started once the current one holds this much."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY,       -- the number of the row's first op (ops are numbered in order)
    enqueued_at INTEGER NOT NULL,  -- epoch ms: the age trigger and the delivery-latency metric
    ops INTEGER NOT NULL,          -- how many ops the row holds
    size INTEGER NOT NULL,         -- the ops' bytes (separators not counted): totals never read data
    segment INTEGER NOT NULL,      -- the segment file holding the ops, joined by SEP
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL
)
"""


class SpoolInUseError(RuntimeError):
    """Another process has this spool open."""


class Spool:
    def __init__(self, path: Path) -> None:
        # Spooled ops hold prompts and command output: the state directory and every file in it are
        # the daemon's user's only. SQLite gives its -wal and -shm files the database file's mode.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        os.chmod(path, 0o600)
        self.path = path
        self._lock = threading.Lock()
        # One process per spool: two daemons draining one FIFO would interleave their batches and
        # lose the per-conversation order. flock is released by the kernel if the process dies.
        lock_path = path.with_name(path.name + ".lock")
        self._owner = os.fdopen(
            os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600), "a+b"
        )
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._owner.close()
            raise SpoolInUseError(
                f"{path} is in use by another ingestor; give each daemon its own --state-dir"
            ) from None
        self.quarantined_ops = 0
        """Ops found unreadable on open, their rows moved to `QUARANTINE_DIR`."""
        self.quarantined_index = False
        """Whether the index itself was unreadable on open and moved there with every segment."""
        try:
            self._db, old = self._open_index()
        except sqlite3.DatabaseError as error:
            quarantine_index(self.path, self._prefix, error)
            self.quarantined_index = True
            self._db, old = self._open_index()
        opened = self.path.stat()
        self._identity = (opened.st_dev, opened.st_ino)
        self._wal_synced = True
        """False while a confirmation was committed without syncing the WAL (`durable=False`)."""
        self._readers: dict[int, int] = {}
        self._writer: int | None = None
        self._writer_at = 0
        self.quarantined_ops = quarantine_short_rows(self._db, self.path, self._segment_path)
        count, total = self._db.execute(
            "SELECT coalesce(sum(ops), 0), coalesce(sum(size), 0) FROM spool"
        ).fetchone()
        self._ops: int = count
        self._bytes: int = total
        last = self._db.execute("SELECT seq + ops FROM spool ORDER BY seq DESC LIMIT 1").fetchone()
        self._next: int = 1 if last is None else int(last[0])
        # Segments left by earlier runs: appends go to a new one; the old ones go once confirmed.
        self._segments = sorted(
            int(name[len(self._prefix) : -4])
            for name in os.listdir(path.parent)
            if name.startswith(self._prefix)
            and name.endswith(".seg")
            and name[len(self._prefix) : -4].isdigit()
        )
        self._segment = (self._segments[-1] if self._segments else 0) + 1
        for segment in self._segments:  # open now, like new segments (see `_open_writer`)
            self._readers[segment] = os.open(self._segment_path(segment), os.O_RDONLY | os.O_CLOEXEC)
        if old:
            convert(self._db, old, self.append)
        self._collect()

    def _open_index(self) -> tuple[sqlite3.Connection, str | None]:
        """The index database, and the table of an earlier format to convert, if there is one."""
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per call.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # WAL + synchronous=FULL: a committed append survives a SIGKILL and a power cut alike.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._db = db
            old = old_format(db)
            db.execute(_SCHEMA)
            db.execute("SELECT count(*) FROM spool").fetchone()  # reads every page of the table
        except BaseException:
            db.close()
            raise
        return db, old

    @property
    def _prefix(self) -> str:
        return self.path.name + "."

    def _segment_path(self, segment: int) -> Path:
        return self.path.with_name(f"{self._prefix}{segment:08d}.seg")

    @property
    def ops(self) -> int:
        return self._ops

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def append(
        self,
        bodies: Sequence[bytes],
        enqueued_at: int,
        *,
        max_ops: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Spool `bodies` (compact JSON, no newline): one write and fsync of the data, one
        transaction; one row per `max_ops` ops / `max_bytes` bytes (an op larger than `max_bytes`
        gets a row of its own)."""
        if not bodies:
            return
        sizes = [len(body) for body in bodies]
        total = sum(sizes)
        row_ops = max_ops or len(bodies)
        row_bytes = max_bytes or total
        groups: list[Sequence[bytes]]
        if len(bodies) <= row_ops and total <= row_bytes:
            groups = [bodies]
        else:
            groups = []
            start = size = 0
            for index, length in enumerate(sizes):
                if index > start and (index - start >= row_ops or size + length > row_bytes):
                    groups.append(bodies[start:index])
                    start, size = index, 0
                size += length
            groups.append(bodies[start:])
        with self._lock:
            fd = self._open_writer()
            rows = []
            blobs = []
            seq, offset, position = self._next, self._writer_at, 0
            for group in groups:
                blob = group[0] if len(group) == 1 else SEP.join(group)
                if blob.count(b"\n") != len(group) - 1:
                    raise ValueError("spooled ops must be compact JSON (no newline)")
                group_size = sum(sizes[position : position + len(group)])
                rows.append((seq, enqueued_at, len(group), group_size, self._segment, offset, len(blob)))
                blobs.append(blob)
                seq += len(group)
                offset += len(blob)
                position += len(group)
            try:
                # The data first, durable; then the rows that refer to it. A crash in between leaves
                # bytes no row points at, which are never read.
                write_all(fd, blobs)
                os.fdatasync(fd)
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT INTO spool (seq, enqueued_at, ops, size, segment, offset, length) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except (OSError, sqlite3.OperationalError) as error:
                # Nothing of this append happened: free what it wrote, so the next one (the same ops,
                # once there is room) starts where this one did.
                os.ftruncate(fd, self._writer_at)
                os.lseek(fd, self._writer_at, os.SEEK_SET)
                if not is_disk_full(error):
                    raise
                self._drop_writer_if_delivered()
                raise DiskFullError(f"spool: no space left in {self.path.parent}: {error}") from error
            self._writer_at = offset
            self._wal_synced = True
            self._next = seq
            self._ops += len(bodies)
            self._bytes += total

    def orphaned(self) -> bool:
        """Whether the spool's files are no longer where they were opened (the state directory was
        deleted or replaced): appends would go to files nothing can find after a restart."""
        try:
            found = self.path.stat()
        except FileNotFoundError:
            return True
        return (found.st_dev, found.st_ino) != self._identity

    def _drop_writer_if_delivered(self) -> None:
        """On a full disk: delete the segment being appended to if nothing in it waits any more, so
        that what was delivered from it makes room (segments are otherwise deleted only once full)."""
        if self._writer is None:
            return
        waiting = self._db.execute(
            "SELECT 1 FROM spool WHERE segment = ? LIMIT 1", (self._segment,)
        ).fetchone()
        if waiting is not None:
            return
        os.close(self._writer)
        self._writer = None
        self._segments.remove(self._segment)
        reader = self._readers.pop(self._segment, None)
        if reader is not None:
            os.close(reader)
        self._segment_path(self._segment).unlink(missing_ok=True)
        self._segment += 1

    def _open_writer(self) -> int:
        """The segment appends go to: a new one at start and whenever the current one is full."""
        if self._writer is not None and self._writer_at < SEGMENT_BYTES:
            return self._writer
        if self._writer is not None:
            os.close(self._writer)
            self._segment += 1
        path = self._segment_path(self._segment)
        self._writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        # Opened for reading now, not when first read: the data stays readable (to be delivered)
        # even if the state directory is deleted meanwhile.
        self._readers[self._segment] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._writer_at = 0
        self._segments.append(self._segment)
        # The new file's name must survive a power cut too, before any row refers to it.
        directory = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._collect()  # the previous segment, if nothing in it waits any more
        return self._writer

    def _read(self, segment: int, offset: int, length: int) -> bytes:
        fd = self._readers.get(segment)
        if fd is None:
            fd = self._readers[segment] = os.open(self._segment_path(segment), os.O_RDONLY | os.O_CLOEXEC)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise RuntimeError(f"spool segment {segment}: {len(data)} of {length} bytes at {offset}")
        return data

    def peek_batch(
        self, max_ops: int, max_bytes: int, *, after: int | None = None, full: bool = False
    ) -> Batch | None:
        """The oldest ops, at most `max_ops` and `max_bytes` (but always at least one if any), whole
        rows where they fit; a first row larger than that is cut (its first ops, at least one).

        `after`: the ops from number `after + 1` on, as if those up to `after` were confirmed already
        (None unless a row starts there). `full`: None unless the batch reaches `max_ops` or
        `max_bytes` (or there is more than fits in it)."""
        with self._lock:
            heads: list[tuple[int, int, int, int, int, int, int]] = []
            count = size = 0
            reached = False
            cursor = self._db.execute(
                "SELECT seq, enqueued_at, ops, size, segment, offset, length FROM spool WHERE seq > ? "
                "ORDER BY seq",
                (0 if after is None else after,),
            )
            try:
                for row in cursor:
                    if after is not None and not heads and row[0] != after + 1:
                        return None
                    ops, row_size = row[2], row[3]
                    if heads and (count + ops > max_ops or size + row_size > max_bytes):
                        reached = True
                        break
                    heads.append(row)
                    count += ops
                    size += row_size
                    if count >= max_ops or size >= max_bytes:
                        reached = True
                        break
            finally:
                cursor.close()
            if not heads or (full and not reached):
                return None
            bodies = [self._read(segment, offset, length) for *_, segment, offset, length in heads]
        first, enqueued_at, ops, row_size = heads[0][:4]
        if len(heads) == 1 and ops > 1 and (ops > max_ops or row_size > max_bytes):
            cut = ops_within(bodies[0].split(SEP), max_ops, max_bytes)
            return Batch(first, enqueued_at, len(cut), sum(map(len, cut)), (SEP.join(cut),))
        return Batch(first, enqueued_at, count, size, tuple(bodies))

    def head_enqueued_at(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT enqueued_at FROM spool ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def delete_through(self, seq: int, *, durable: bool = True) -> None:
        """Forget every op up to and including op number `seq` (confirmed in FIFO order). A row that
        `seq` ends in the middle of keeps its remaining ops (their numbers unchanged).

        `durable=False`: committed without an fsync (it survives the process dying, not a power cut;
        the next durable commit, `sync()` or `close()` makes it durable). Losing one to a power cut
        only means those ops are sent again, which their keys make harmless."""
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                try:
                    self._delete_through(seq)
                except sqlite3.OperationalError as error:
                    # A full disk: confirming needs room in the WAL, and confirming is what frees room.
                    if not is_disk_full(error) or not release_reserve(self.path):
                        raise
                    self._delete_through(seq)
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")
            # A durable commit syncs the WAL, and with it every earlier commit.
            self._wal_synced = durable
            self._collect()

    def _delete_through(self, seq: int) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            count, total = self._db.execute(
                "SELECT coalesce(sum(ops), 0), coalesce(sum(size), 0) FROM spool WHERE seq <= ?", (seq,)
            ).fetchone()
            partial = self._db.execute(
                "SELECT seq, enqueued_at, segment, offset, length FROM spool "
                "WHERE seq <= ? AND seq + ops - 1 > ? ORDER BY seq DESC LIMIT 1",
                (seq, seq),
            ).fetchone()
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))
            if partial is not None:
                row_seq, enqueued_at, segment, offset, length = partial
                ops = self._read(segment, offset, length).split(SEP)
                done = ops[: seq - row_seq + 1]
                rest = ops[len(done) :]
                skip = sum(map(len, done)) + len(SEP) * len(done)
                rest_size = sum(map(len, rest))
                # The row now starts at its first unconfirmed op: same data, fewer ops.
                self._db.execute(
                    "INSERT INTO spool (seq, enqueued_at, ops, size, segment, offset, length) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (seq + 1, enqueued_at, len(rest), rest_size, segment, offset + skip, length - skip),
                )
                count -= len(rest)
                total -= rest_size
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._ops -= count
        self._bytes -= total

    def sync(self) -> None:
        """Make the confirmations committed with `durable=False` durable (one fsync of the WAL)."""
        with self._lock:
            self._sync_wal()

    def _sync_wal(self) -> None:
        if self._wal_synced:
            return
        # SQLite has written the committed frames to the WAL file: syncing it is what
        # `synchronous=FULL` would have done at those commits.
        try:
            wal = os.open(self.path.with_name(self.path.name + "-wal"), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # the state directory was deleted (see `orphaned`): nothing left to make durable
        try:
            os.fsync(wal)
        finally:
            os.close(wal)
        self._wal_synced = True

    def _collect(self) -> None:
        """Delete the segments no row refers to any more (all but the one being appended to)."""
        row = self._db.execute("SELECT segment FROM spool ORDER BY seq LIMIT 1").fetchone()
        oldest = self._segment if row is None else int(row[0])
        if self._segments and self._segments[0] < oldest:
            # The rows that referred to a segment must be gone for good before the segment is.
            self._sync_wal()
        while self._segments and self._segments[0] < oldest:
            segment = self._segments.pop(0)
            reader = self._readers.pop(segment, None)
            if reader is not None:
                os.close(reader)
            self._segment_path(segment).unlink(missing_ok=True)
        if not self.orphaned():
            keep_reserve(self.path)

    def close(self) -> None:
        with self._lock:
            self._sync_wal()
            for fd in self._readers.values():
                os.close(fd)
            self._readers.clear()
            if self._writer is not None:
                os.close(self._writer)
                self._writer = None
            self._db.close()
            self._owner.close()
