"""Where each followed (or replayed) file stands: its identity and how far its lines are stored.

One row per path in `<state dir>/checkpoints.db` (SQLite, WAL): the file's device and inode, a
fingerprint of its first bytes (a replaced file that got the same inode is not the old one), the
offset just past the last line whose operations the sink durably accepted, that line count, and the
file's size and mtime when it was last read. A row is only ever written after the sink's `write`
returned (`ingestor.sinks.checkpointing`), so it is never ahead of the store: a restart, clean or
SIGKILL, resumes at or before the first line not stored, and the store's idempotency makes a line
read twice one row.

The rows of files gone for `FORGET_AFTER_NS` are deleted.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, cast

from ingestor.ops import Op

FINGERPRINT_BYTES: Final = 1024
"""How much of a file's start identifies it: a session file's first line (`session_meta`) alone is
longer and names the session's id and start time."""
FORGET_AFTER_NS: Final = 7 * 24 * 3600 * 10**9
"""A vanished file's row is kept this long: its compressed form (`.jsonl.zst`) may appear later and
takes its place (same session), or the file may come back from a restore."""
DB_NAME: Final = "checkpoints.db"


CHECKPOINT_OP: Final[str] = "ingestor/checkpoint"
"""The `op` of a checkpoint marker: travels among a stream's operations, behind those of the lines it
covers, and is taken out before any store sees it (ingestor.sinks.checkpointing)."""


def fingerprint(head: bytes) -> bytes:
    """The identity of a file's content from its first bytes (at most `FINGERPRINT_BYTES`)."""
    return hashlib.blake2b(head[:FINGERPRINT_BYTES], digest_size=16).digest()


class Checkpoint(NamedTuple):
    """A tuple: a replay over an archive loads one per file at start (20,000 built in a tenth of the
    time frozen dataclasses take)."""

    path: str
    device: int
    inode: int
    head_len: int
    """How many first bytes `head` was taken over (fewer than `FINGERPRINT_BYTES` in a short file)."""
    head: bytes
    offset: int
    """Bytes of (decompressed) content whose lines are stored: always just past a newline."""
    lines: int
    """Lines in those bytes: the ordinal of the next line to store."""
    size: int
    """The file's size on disk when last read (compressed, for a `.zst`)."""
    mtime_ns: int
    finished: bool
    """The stream was ended on purpose (end of a replayed file, a followed file gone quiet, removed or
    compressed): its end-of-stream operations are stored too."""


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS checkpoints (
    path TEXT PRIMARY KEY,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    head_len INTEGER NOT NULL,
    head BLOB NOT NULL,
    "offset" INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    finished INTEGER NOT NULL,
    missing_since_ns INTEGER
)
"""
_COLUMNS: Final = 'path, device, inode, head_len, head, "offset", lines, size, mtime_ns, finished'


class Checkpoints:
    """The checkpoint table, loaded whole at open (a restart over many files costs one query)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = state_dir / DB_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # paths of sessions: the owner's only
        os.close(fd)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A committed transaction survives the process being killed; only power loss could take the
        # last ones, and then the store's idempotency covers reading those lines again.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self.by_path: dict[str, Checkpoint] = {
            row[0]: Checkpoint(
                row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], bool(row[9])
            )
            for row in self._db.execute(f"SELECT {_COLUMNS} FROM checkpoints")
        }
        self._missing_since: dict[str, int] = dict(
            self._db.execute(
                "SELECT path, missing_since_ns FROM checkpoints WHERE missing_since_ns IS NOT NULL"
            )
        )

    def save(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Record `checkpoints` (their files' lines are durably stored), in one transaction."""
        rows = [
            (c.path, c.device, c.inode, c.head_len, c.head, c.offset, c.lines, c.size, c.mtime_ns, c.finished)
            for c in checkpoints
        ]
        if not rows:
            return
        for checkpoint in checkpoints:
            self._missing_since.pop(checkpoint.path, None)
        with self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO checkpoints ({_COLUMNS}, missing_since_ns) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                rows,
            )
        for checkpoint in checkpoints:
            self.by_path[checkpoint.path] = checkpoint

    def forget_missing(
        self, present: set[str], watched: Callable[[str], bool], now_ns: int | None = None
    ) -> None:
        """Note which recorded files under watch (`watched(path)`) are gone, not in `present`; delete
        those gone for long. Files of other runs sharing the state directory are left alone."""
        now = time.time_ns() if now_ns is None else now_ns
        back = [path for path in self._missing_since if path in present]
        gone_now = [
            path
            for path in self.by_path
            if path not in present and path not in self._missing_since and watched(path)
        ]
        for path in back:
            del self._missing_since[path]
        for path in gone_now:
            self._missing_since[path] = now
        forget = [path for path, since in self._missing_since.items() if since < now - FORGET_AFTER_NS]
        if not (back or gone_now or forget):
            return
        with self._db:
            self._db.executemany(
                "UPDATE checkpoints SET missing_since_ns = NULL WHERE path = ?", [(p,) for p in back]
            )
            self._db.executemany(
                "UPDATE checkpoints SET missing_since_ns = ? WHERE path = ?", [(now, p) for p in gone_now]
            )
            self._db.executemany("DELETE FROM checkpoints WHERE path = ?", [(p,) for p in forget])
        for path in forget:
            del self.by_path[path], self._missing_since[path]

    def close(self) -> None:
        self._db.close()


def checkpoint_op(checkpoint: Checkpoint) -> Op:
    """The marker that saves `checkpoint` once every operation before it is durable."""
    # Not one of the store's operations (OpName): it travels in their list and is taken out by the sink.
    return cast(Op, {"op": CHECKPOINT_OP, "key": checkpoint.path, "args": {"checkpoint": checkpoint}})


def checkpoint_of(marker: Op) -> Checkpoint:
    """The checkpoint a `checkpoint_op` marker carries."""
    args: Mapping[str, Any] = marker["args"]
    checkpoint: Checkpoint = args["checkpoint"]
    return checkpoint
