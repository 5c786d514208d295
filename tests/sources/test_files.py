"""FilesSource: what a replay reads of each path, what it skips, and how far its progress says it is."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from pathlib import Path

import anyio
import zstandard

from ingestor.sources.files import SNIFF_BYTES, FilesSource, SkippedFile


async def _serve(paths: list[str]) -> tuple[FilesSource, dict[str, bytes]]:
    source = FilesSource(paths)
    read: dict[str, bytes] = {}

    async def handle(name: str, chunks: AsyncGenerator[bytes, None]) -> None:
        read[name] = b"".join([chunk async for chunk in chunks])

    await source.serve(handle)
    return source, read


def test_a_file_is_sniffed_by_its_first_bytes_only_and_read_whole(tmp_path: Path) -> None:
    lines = b'{"a": 1}\n' * (200_000 // 9)  # several reads
    late_nul = tmp_path / "late_nul.jsonl"  # a NUL after the sniffed head: text, read
    late_nul.write_bytes(b"x" * SNIFF_BYTES + b"\n\0\n")
    early_nul = tmp_path / "early_nul.jsonl"
    early_nul.write_bytes(b"x" * (SNIFF_BYTES - 1) + b"\0" + lines)
    database = tmp_path / "db.jsonl"
    database.write_bytes(b"SQLite format 3\0" + lines)
    packed = tmp_path / "packed.jsonl.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress(lines))
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(lines)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    paths = [str(p) for p in (late_nul, early_nul, database, packed, plain, empty)]

    source, read = anyio.run(_serve, paths)

    assert read == {
        f"file:{late_nul}": late_nul.read_bytes(),
        f"file:{packed}": lines,
        f"file:{plain}": lines,
        f"file:{empty}": b"",
    }
    assert source.skipped == [
        SkippedFile(str(early_nul), "binary file"),
        SkippedFile(str(database), "SQLite database"),
    ]
    progress = source.progress
    assert (progress.files_done, progress.files_total) == (6, 6)
    assert progress.bytes_done == progress.bytes_total == sum(os.path.getsize(p) for p in paths)


def test_a_pipe_is_read_as_it_comes_and_never_sniffed() -> None:
    """`ingestor replay <(codex exec --json ...)`: the path is a pipe, which has no head to look at."""
    read_end, write_end = os.pipe()
    data = b"\0 not sniffed\n" + b'{"a": 1}\n'
    os.write(write_end, data)
    os.close(write_end)
    try:
        source, read = anyio.run(_serve, [f"/dev/fd/{read_end}"])
    finally:
        os.close(read_end)
    assert read == {f"file:/dev/fd/{read_end}": data}
    assert source.skipped == []
    assert (source.progress.files_done, source.progress.bytes_done) == (1, 0)
