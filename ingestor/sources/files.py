"""Replay input: files, directories (recursively) and `-` for standard input, one stream each.

Files are processed one after another in a deterministic order (the order given; inside a directory,
paths sorted), so replaying the same tree always produces the same operations in the same order.
A file named `*.zst` is read decompressed: Codex may keep its session files as
`rollout-*.jsonl.zst`, and a file may move between the two forms. Both forms hold the same lines,
which make the same operations (keys come from the content and the line's position in its file),
so a session replayed in either form, or both, is stored once.

A regular file whose first bytes show it is no JSON lines at all (a SQLite database, a binary) is
skipped and listed in `FilesSource.skipped`: `replay ~/.codex` must not store Codex's databases as
lines of text. Anything else is read, whatever it holds: a line that is not Codex JSON is stored raw
(ingestor/normalize/raw.py) and counted by the pipeline.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zstandard
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ingestor.errors import MissingPathError
from ingestor.logging import get_logger
from ingestor.sources import StreamHandler
from ingestor.sources.fd import read_fd

FILE_READ_SIZE: Final = 64 * 1024
"""Plain reads of a few hundred lines: the per-read cost is already negligible next to the per-line
work (the same instructions per line as 1 MiB reads), and the event loop gets a turn every few
milliseconds, so the Convex sink's HTTP exchanges keep pace with a replay instead of waiting behind
the normalization of a whole megabyte (a tenth faster into the Convex blackhole: docs/benchmarks.md)."""
REPLAY_QUEUE_CHUNKS: Final = 128
"""The pipeline's queue for a replay, in reads (`PipelineConfig.queue_chunks`): 8 MiB of input, as
operations, may wait for the sink. While the sink is busy the queue fills, and the sink's next write
takes all of it: SQLite commits that many operations in one transaction (fewer commits rewrite the
pages of the key indexes fewer times), and the memory bound stays 8 MiB of input."""

log = get_logger("ingestor.sources")

STDIN: Final = "-"
ZSTD_SUFFIX: Final = ".zst"


def expand_paths(paths: Sequence[str]) -> list[str]:
    """The files to replay: each argument in order; a directory becomes its files, recursively,
    sorted by path; hidden entries inside directories are skipped. `-` stays `-`."""
    missing = [p for p in paths if p != STDIN and not os.path.exists(p)]
    if missing:
        raise MissingPathError(", ".join(missing))
    files: list[str] = []
    for path in paths:
        if path != STDIN and os.path.isdir(path):
            files.extend(_walk(Path(path)))
        else:
            files.append(path)
    return files


def _walk(root: Path) -> Iterator[str]:
    found: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(os.path.join(directory, f) for f in filenames if not f.startswith("."))
    yield from sorted(found)


@dataclass(slots=True)
class ReplayProgress:
    """How far a replay has read, in files and in bytes on disk (a `.zst` file counts compressed)."""

    files_total: int
    bytes_total: int
    """The regular files' sizes (pipes and stdin have none)."""
    files_done: int = 0
    bytes_done: int = 0


@dataclass(frozen=True, slots=True)
class SkippedFile:
    path: str
    what: str
    """What it is instead of JSON lines: `SQLite database`, `binary file`."""


SNIFF_BYTES: Final = 8192
SQLITE_HEADER: Final = b"SQLite format 3\x00"


def not_json_lines(head: bytes) -> str | None:
    """What a file is when its first bytes show it cannot be JSON lines, else None. JSON text never
    holds a NUL byte (strings escape control characters), while databases and images are full of
    them: `replay ~/.codex` meets Codex's SQLite files beside its sessions."""
    if head.startswith(SQLITE_HEADER):
        return "SQLite database"
    if b"\x00" in head:
        return "binary file"
    return None


async def _read_zstd(path: str, progress: ReplayProgress) -> AsyncGenerator[bytes, None]:
    # A compressed file is a regular file: read like one (no event-loop waits), across all its frames.
    with (
        open(path, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as data,
    ):
        done = progress.bytes_done
        while chunk := data.read(FILE_READ_SIZE):
            progress.bytes_done = done + raw.tell()
            yield chunk


async def _read_regular(fd: int, first: bytes, progress: ReplayProgress) -> AsyncGenerator[bytes, None]:
    # A regular file's reads never wait: plain reads, no event-loop round trips.
    data = first
    while data:
        progress.bytes_done += len(data)
        yield data
        data = os.read(fd, FILE_READ_SIZE)


def _head_zstd(path: str) -> bytes:
    """The first bytes of a `.zst` file as its lines would be read (decompressed)."""
    try:
        with (
            open(path, "rb") as raw,
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as data,
        ):
            return data.read(SNIFF_BYTES)
    except zstandard.ZstdError:
        return b""  # read as usual: the error is reported where the data is read


def _size(path: str) -> int:
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode):
            return info.st_size
    return 0


class FilesSource:
    def __init__(self, files: Sequence[str]) -> None:
        self._files = list(files)
        self.progress = ReplayProgress(len(self._files), sum(_size(p) for p in self._files if p != STDIN))
        self.skipped: list[SkippedFile] = []
        """Files left out because they are clearly not JSON lines."""

    async def serve(
        self, handle: StreamHandler, *, task_status: TaskStatus[str] = TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(f"{len(self._files)} file(s)")
        progress = self.progress
        for path in self._files:
            if path == STDIN:
                await handle("stdin", read_fd(0, FILE_READ_SIZE))
            elif path.endswith(ZSTD_SUFFIX):
                done = progress.bytes_done
                if not self._skipped(path, _head_zstd(path)):
                    await handle(f"file:{os.path.abspath(path)}", _read_zstd(path, progress))
                progress.bytes_done = done + _size(path)
            else:
                await self._serve_path(path, handle)
            progress.files_done += 1

    async def _serve_path(self, path: str, handle: StreamHandler) -> None:
        """One open, one stat and a first read that is also the sniff: a session archive is thousands
        of small files, and each of these system calls counted per file (docs/benchmarks.md)."""
        # O_NONBLOCK: opening a FIFO must not block the event loop. A path may well be a pipe:
        # `ingestor replay <(codex exec --json ...)` passes /dev/fd/63.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                # A pipe's bytes cannot be looked at without consuming them: read as they come.
                await handle(f"file:{os.path.abspath(path)}", read_fd(fd, FILE_READ_SIZE))
                return
            first = os.read(fd, FILE_READ_SIZE)
            progress = self.progress
            done = progress.bytes_done
            if not self._skipped(path, first[:SNIFF_BYTES]):
                await handle(f"file:{os.path.abspath(path)}", _read_regular(fd, first, progress))
            progress.bytes_done = done + info.st_size
        finally:
            os.close(fd)

    def _skipped(self, path: str, head: bytes) -> bool:
        what = not_json_lines(head)
        if what is None:
            return False
        log.debug("skipped: not JSON lines", path=path, what=what)
        self.skipped.append(SkippedFile(path, what))
        return True
