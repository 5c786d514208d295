"""One file read as it grows: its stream of byte chunks, and where its complete lines end.

The reader yields what it reads at once (the pipeline's splitter holds a torn line until its
newline); at every chunk that completes lines it notes a `Mark` (lines so far, offset past the last
newline), which `FollowedNormalizer` turns into a checkpoint marker after those lines' operations.
At the end of what is written it waits for a change notification, and ends the stream when the file
is done with (`Tail.ending` says how).
"""

from __future__ import annotations

import enum
import os
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Final

import anyio
import zstandard

from ingestor.checkpoints import FINGERPRINT_BYTES, Checkpoint, fingerprint
from ingestor.logging import get_logger

log = get_logger("ingestor.follow")

READ_SIZE: Final = 64 * 1024
ZSTD_SUFFIX: Final = ".zst"


class Ending(enum.Enum):
    FINISHED = "finished"
    """Quiet for the idle time, removed, or read once (replay): its end-of-stream facts are stored."""
    REOPEN = "reopen"
    """Truncated or replaced by another file: this content is finished; read the path again from its
    start."""
    STOPPED = "stopped"
    """The daemon stops: nothing about the file is concluded."""


@dataclass(frozen=True, slots=True)
class Mark:
    lines: int
    offset: int


@dataclass(slots=True)
class Tail:
    """One stream of one file: shared by its reader and its `FollowedNormalizer`."""

    path: str
    device: int
    inode: int
    skip_lines: int
    """Lines already stored: read again only to rebuild the normalizer's state, their ops dropped."""
    finished_before: bool = False
    """The checkpoint it resumes from was a finished stream's."""
    size: int = 0
    mtime_ns: int = 0
    head: bytearray = field(default_factory=bytearray)
    """The content's first bytes (up to FINGERPRINT_BYTES): the file's fingerprint."""
    lines_read: int = 0
    """Complete lines read: a line with a higher ordinal is a torn write, not a line yet."""
    offset: int = 0
    """Bytes of content read up to the last newline."""
    position: int = 0
    """Bytes of content read."""
    marks: deque[Mark] = field(default_factory=deque)
    hold: bool = False
    """The stream's normalizer would guess at the file's end (`end_is_a_guess`): quiet is not finished."""
    ending: Ending = Ending.STOPPED
    wake: anyio.Event = field(default_factory=anyio.Event)
    last_data_ns: int = field(default_factory=time.monotonic_ns)
    caught_up_ns: int = field(default_factory=time.time_ns)
    """When the file was last read to its end (wall clock): the age of its oldest unread line."""

    @property
    def compressed(self) -> bool:
        return self.path.endswith(ZSTD_SUFFIX)

    def checkpoint(self, mark: Mark, *, finished: bool = False) -> Checkpoint:
        head = bytes(self.head)
        return Checkpoint(
            self.path,
            self.device,
            self.inode,
            len(head),
            fingerprint(head),
            mark.offset,
            mark.lines,
            self.size,
            self.mtime_ns,
            finished,
        )

    def took(self, data: bytes) -> None:
        """`data` was read: note where its complete lines end."""
        if len(self.head) < FINGERPRINT_BYTES:
            self.head += data[: FINGERPRINT_BYTES - len(self.head)]
        start = self.position
        self.position += len(data)
        newline = data.rfind(b"\n")
        if newline >= 0:
            self.lines_read += data.count(b"\n")
            self.offset = start + newline + 1
            self.marks.append(Mark(self.lines_read, self.offset))
        self.last_data_ns = time.monotonic_ns()

    def torn(self) -> bool:
        return self.position > self.offset


def read_head(path: str, fd: int) -> bytes:
    """The content's first bytes, decompressed for a `.zst` (b"" for one too short to tell yet)."""
    if not path.endswith(ZSTD_SUFFIX):
        return os.pread(fd, FINGERPRINT_BYTES, 0)
    try:
        with _decompressed(fd) as data:
            return data.read(FINGERPRINT_BYTES)
    except zstandard.ZstdError:
        return b""  # still being written
    finally:
        os.lseek(fd, 0, os.SEEK_SET)


def _decompressed(fd: int) -> zstandard.ZstdDecompressionReader:
    """`fd`'s content from its start, decompressed across all its frames (`fd` stays open)."""
    os.lseek(fd, 0, os.SEEK_SET)
    return zstandard.ZstdDecompressor().stream_reader(
        os.fdopen(os.dup(fd), "rb"), read_across_frames=True, closefd=True
    )


async def read_compressed(tail: Tail, fd: int) -> AsyncGenerator[bytes, None]:
    """A `.zst` file: written once, whole (compressing a finished session), so read once, whole.
    One still being written ends the stream unfinished: its next change opens it again."""
    try:
        with _decompressed(fd) as data:
            while chunk := data.read(READ_SIZE):
                tail.took(chunk)
                yield chunk
    except zstandard.ZstdError as error:
        log.info("compressed file unreadable yet (still being written?)", path=tail.path, error=str(error))
        return
    tail.ending = Ending.FINISHED


async def read_growing(tail: Tail, fd: int, *, idle_ns: int, once: bool) -> AsyncGenerator[bytes, None]:
    """A plain file, read as it grows until it is done with: quiet for `idle_ns` with no torn line and
    no end its normalizer would guess at (`Tail.hold`), removed, truncated or replaced (`once`: at its
    current end)."""
    while True:
        data = os.read(fd, READ_SIZE)
        if data:
            tail.took(data)
            stat = os.fstat(fd)
            tail.size, tail.mtime_ns = stat.st_size, stat.st_mtime_ns
            yield data
            continue
        # At the end of what is written: decide before waiting, with the wake-up armed first so that
        # a notification arriving meanwhile is not lost.
        tail.wake = anyio.Event()
        tail.caught_up_ns = time.time_ns()
        stat = os.fstat(fd)
        tail.size, tail.mtime_ns = stat.st_size, stat.st_mtime_ns
        if stat.st_size > tail.position:
            continue
        if stat.st_size < tail.position:
            tail.ending = Ending.REOPEN  # truncated: its lines are other lines now
            return
        try:
            on_path = os.stat(tail.path)
        except FileNotFoundError:
            tail.ending = Ending.FINISHED  # removed (or compressed: the .zst is the same session)
            return
        if (on_path.st_dev, on_path.st_ino) != (tail.device, tail.inode):
            tail.ending = Ending.REOPEN  # replaced: this one is read to its end, now the new one
            return
        if once:
            tail.ending = Ending.FINISHED
            return
        # Quiet since the later of the last read and the last write (a restart re-reads old files).
        quiet_for = min(time.monotonic_ns() - tail.last_data_ns, time.time_ns() - stat.st_mtime_ns)
        waits_for_more = tail.torn() or tail.hold
        if quiet_for >= idle_ns and not waits_for_more:
            tail.ending = Ending.FINISHED
            return
        with anyio.move_on_after(None if waits_for_more else max(idle_ns - quiet_for, 0) / 1e9):
            await tail.wake.wait()
