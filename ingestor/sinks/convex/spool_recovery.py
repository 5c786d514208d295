"""The spool's repairs on open: what disk trouble left unreadable is moved aside, and a spool of an
earlier format is converted.

Format history: spools of the earlier format (one SQLite row per op, its body in the row) are
converted on open, in order.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from ingestor.logging import get_logger

log = get_logger("ingestor.spool")

QUARANTINE_DIR: Final = "spool-quarantine"
"""Beside the spool: what could not be read on open, moved aside (one timestamped folder each time)."""

_CONVERT_ROW_BYTES: Final = 4 * 1024 * 1024


def quarantine_dir(path: Path) -> Path:
    directory = path.with_name(QUARANTINE_DIR) / time.strftime("%Y%m%dT%H%M%S")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def quarantine_index(path: Path, prefix: str, error: sqlite3.DatabaseError) -> None:
    """The index cannot be read (disk trouble): move it and every segment aside, start empty.
    What it held is unknown: the segments are kept whole for an operator to look at."""
    directory = quarantine_dir(path)
    for name in sorted(os.listdir(path.parent)):
        if name in (path.name, path.name + "-wal", path.name + "-shm") or (
            name.startswith(prefix) and name.endswith(".seg")
        ):
            os.replace(path.with_name(name), directory / name)
    log.error(
        "spool index unreadable: moved aside with its segments, starting an empty spool",
        error=str(error),
        quarantine=str(directory),
    )


def quarantine_short_rows(db: sqlite3.Connection, path: Path, segment_path: Callable[[int], Path]) -> int:
    """Rows whose bytes are not (all) in their segment file (truncated or lost by disk trouble)
    can never be sent: copy what is left of those segments aside with the rows' description,
    forget the rows, deliver the rest. Returns how many ops were lost."""
    lost: list[tuple[int, int, int, int, int, int]] = []
    for segment, end in db.execute("SELECT segment, max(offset + length) FROM spool GROUP BY segment"):
        try:
            size = segment_path(segment).stat().st_size
        except FileNotFoundError:
            size = -1
        if size < end:
            lost += db.execute(
                "SELECT seq, ops, segment, offset, length, ? FROM spool "
                "WHERE segment = ? AND offset + length > ?",
                (size, segment, max(size, 0)),
            ).fetchall()
    if not lost:
        return 0
    directory = quarantine_dir(path)
    for segment in sorted({row[2] for row in lost if row[5] >= 0}):
        shutil.copyfile(segment_path(segment), directory / segment_path(segment).name)
    columns = ("seq", "ops", "segment", "offset", "length", "segment_size")
    (directory / "rows.json").write_text(json.dumps([dict(zip(columns, row, strict=True)) for row in lost]))
    db.execute("BEGIN IMMEDIATE")
    db.executemany("DELETE FROM spool WHERE seq = ?", [(row[0],) for row in lost])
    db.execute("COMMIT")
    quarantined = sum(row[1] for row in lost)
    log.error(
        "spool segments truncated or missing: their ops cannot be sent and were moved aside; "
        "delivering the rest",
        ops=quarantined,
        rows=len(lost),
        quarantine=str(directory),
    )
    return quarantined


def old_format(db: sqlite3.Connection) -> str | None:
    """The name the table of the one-row-per-op format was moved to, if this spool has one."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(spool)")]
    if "body" in columns:
        db.execute("ALTER TABLE spool RENAME TO spool_v1")
        return "spool_v1"
    if [row[1] for row in db.execute("PRAGMA table_info(spool_v1)")]:
        return "spool_v1"
    return None


def convert(db: sqlite3.Connection, table: str, append: Callable[..., None]) -> None:
    """Move the ops of the earlier format into segments, in order; then drop its table. (A crash
    in the middle converts it again on the next start: ops sent twice are applied once.)"""
    group: list[bytes] = []
    group_at = last = 0
    while True:
        rows = db.execute(
            f"SELECT seq, enqueued_at, body FROM {table} WHERE seq > ? ORDER BY seq LIMIT 1000",
            (last,),
        ).fetchall()
        if not rows:
            break
        for seq, enqueued_at, body in rows:
            if group and (enqueued_at != group_at or len(group) >= 1000):
                append(group, group_at, max_ops=1000, max_bytes=_CONVERT_ROW_BYTES)
                group = []
            group_at, last = enqueued_at, seq
            group.append(body)
    if group:
        append(group, group_at, max_ops=1000, max_bytes=_CONVERT_ROW_BYTES)
    db.execute(f"DROP TABLE {table}")
