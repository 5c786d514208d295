"""Replay input: files, directories (recursively) and `-` for standard input, one stream each.

Files are processed one after another in a deterministic order (the order given; inside a directory,
paths sorted), so replaying the same tree always produces the same operations in the same order.
A file named `*.zst` is read decompressed: Codex may keep its session files as
`rollout-*.jsonl.zst`, and a file may move between the two forms. Both forms hold the same lines,
which make the same operations (keys come from the content and the line's position in its file),
so a session replayed in either form, or both, is stored once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path
from typing import Final

import zstandard
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ingestor.errors import MissingPathError
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


async def _read_zstd(path: str) -> AsyncGenerator[bytes, None]:
    # A compressed file is a regular file: read like one (no event-loop waits), across all its frames.
    with (
        open(path, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as data,
    ):
        while chunk := data.read(FILE_READ_SIZE):
            yield chunk


async def _read_path(path: str) -> AsyncGenerator[bytes, None]:
    # O_NONBLOCK: opening a FIFO must not block the event loop. A path may well be a pipe:
    # `ingestor replay <(codex exec --json ...)` passes /dev/fd/63.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            while data := os.read(fd, FILE_READ_SIZE):
                yield data
        else:
            async for data in read_fd(fd, FILE_READ_SIZE):
                yield data
    finally:
        os.close(fd)


class FilesSource:
    def __init__(self, files: Sequence[str]) -> None:
        self._files = list(files)

    async def serve(
        self, handle: StreamHandler, *, task_status: TaskStatus[str] = TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(f"{len(self._files)} file(s)")
        for path in self._files:
            if path == STDIN:
                await handle("stdin", read_fd(0, FILE_READ_SIZE))
            else:
                read = _read_zstd if path.endswith(ZSTD_SUFFIX) else _read_path
                await handle(f"file:{os.path.abspath(path)}", read(path))
