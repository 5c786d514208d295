"""A full state volume: telling it apart, and the room held in reserve so the spool can still drain."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Final

from ingestor.logging import get_logger

log = get_logger("ingestor.spool")

RESERVE_BYTES: Final = 4 * 1024 * 1024
"""Room held on the state volume (`spool.sqlite3.reserve`) and given up only when the volume is
full, so that confirmations, which need room in SQLite's WAL and free segments, still commit: a
full disk can always be drained."""


class DiskFullError(OSError):
    """The state volume has no room for an append (ENOSPC, EDQUOT, or SQLite's "disk is full").
    Nothing of the append was stored; it can be tried again once there is room."""


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, sqlite3.OperationalError):
        return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _reserve_path(spool: Path) -> Path:
    return spool.with_name(spool.name + ".reserve")


def keep_reserve(spool: Path) -> None:
    """Hold `RESERVE_BYTES` of the volume (a file of them), for confirmations on a full disk."""
    path = _reserve_path(spool)
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.posix_fallocate(fd, 0, RESERVE_BYTES)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        path.unlink()  # no room for it now: kept again once deliveries have freed some
    finally:
        os.close(fd)


def release_reserve(spool: Path) -> bool:
    """Give the reserve's room to SQLite; False when there was none to give."""
    try:
        _reserve_path(spool).unlink()
    except FileNotFoundError:
        return False
    log.warning("state volume full: using the space held in reserve to record confirmations")
    return True


def write_all(fd: int, blobs: list[bytes]) -> None:
    """Write `blobs` in order (one writev when the kernel takes them at once)."""
    pending = [memoryview(blob) for blob in blobs]
    while pending:
        written = os.writev(fd, pending[:1024])
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if written:
            pending[0] = pending[0][written:]
