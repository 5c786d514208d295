"""The follow source in-process (ingestor.sources.follow): files and directories that appear later,
truncation, replacement, compressed files, and a file that goes from plain to compressed.

Each case ends with the store compared with what a one-shot replay of the files makes, and where a
case must not write anything, with the operations the sink was given counted.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import zstandard

from ingestor.checkpoints import Checkpoints
from ingestor.cli.commands import normalizer_factory
from ingestor.ops import Op
from ingestor.pipeline import Pipeline
from ingestor.sinks.checkpointing import CheckpointingSink
from ingestor.sinks.sqlite.sink import open_sqlite_sink
from ingestor.sources.follow import FollowConfig, FollowSource
from tests.cli.test_follow import as_sets, replay_store, store
from tests.golden.store import FIXTURES

pytestmark = pytest.mark.anyio

SESSION_A = next(FIXTURES.glob("codex-0.169.0/sessions/exec-command_outputs/rollout-*.jsonl"))
SESSION_B = next(FIXTURES.glob("codex-0.63.0/sessions/app-server-multi_turn/rollout-*.jsonl"))
IDLE = 0.3


class CountingSink:
    """The SQLite sink, counting the store operations it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ops = 0

    async def write(self, ops: Sequence[Op]) -> None:
        self.ops += len(ops)
        await self.inner.write(ops)

    async def aclose(self) -> None:
        pass


@asynccontextmanager
async def following(roots: list[Path], state: Path, db: Path) -> AsyncIterator[CountingSink]:
    checkpoints = Checkpoints(state)
    source = FollowSource(roots, checkpoints, FollowConfig(idle=IDLE, poll=0.2))
    try:
        async with open_sqlite_sink(db) as sqlite:
            counting = CountingSink(sqlite)
            pipeline = Pipeline(
                CheckpointingSink(counting, checkpoints), source.normalizer_factory(normalizer_factory(None))
            )
            async with anyio.create_task_group() as tg:
                await tg.start(pipeline.run, [source])
                yield counting
                pipeline.stop()
    finally:
        checkpoints.close()


async def until_finished(state: Path, *paths: Path, timeout: float = 20) -> None:
    """Until every file's checkpoint says finished at its current size (reading the table anew)."""
    with anyio.fail_after(timeout):
        while True:
            checkpoints = Checkpoints(state)
            try:
                marks = [checkpoints.by_path.get(str(p)) for p in paths]
            finally:
                checkpoints.close()
            if all(
                m is not None and m.finished and m.size == p.stat().st_size
                for m, p in zip(marks, paths, strict=True)
            ):
                return
            await anyio.sleep(0.05)


def replay_of(tmp_path: Path, *files: Path) -> dict[str, list[bytes]]:
    return replay_store_many(files, tmp_path / "replay.db")


def replay_store_many(files: Sequence[Path], db: Path) -> dict[str, list[bytes]]:
    for path in files:
        replay_store(path, db)
    return as_sets(store(db))


async def test_files_and_date_directories_that_appear_later_are_followed(tmp_path: Path) -> None:
    sessions, state, db = tmp_path / "sessions", tmp_path / "state", tmp_path / "live.db"
    sessions.mkdir()
    async with following([sessions], state, db):
        await anyio.sleep(0.3)
        day = sessions / "2026" / "12" / "05"
        day.mkdir(parents=True)
        target = day / SESSION_A.name
        target.write_bytes(SESSION_A.read_bytes())
        (day / "notes.txt").write_text("not a session file\n")
        await until_finished(state, target)
    assert as_sets(store(db)) == replay_of(tmp_path, SESSION_A)


async def test_a_truncated_file_is_read_again_from_its_start(tmp_path: Path) -> None:
    sessions, state, db = tmp_path / "sessions", tmp_path / "state", tmp_path / "live.db"
    sessions.mkdir()
    target = sessions / "rollout-x.jsonl"
    target.write_bytes(SESSION_A.read_bytes())
    async with following([sessions], state, db):
        await until_finished(state, target)
        with target.open("r+b") as out:  # truncated in place (same inode), then another session
            out.truncate(0)
            out.write(SESSION_B.read_bytes())
        await until_finished(state, target)
    assert as_sets(store(db)) == replay_of(tmp_path, SESSION_A, SESSION_B)


async def test_a_replaced_file_is_read_again_from_its_start(tmp_path: Path) -> None:
    sessions, state, db = tmp_path / "sessions", tmp_path / "state", tmp_path / "live.db"
    sessions.mkdir()
    target = sessions / "rollout-x.jsonl"
    target.write_bytes(SESSION_A.read_bytes()[:-100])  # with a torn last line, waiting for the rest
    async with following([sessions], state, db):
        await anyio.sleep(IDLE * 3)
        replacement = sessions / ".incoming"
        replacement.write_bytes(SESSION_B.read_bytes())
        os.replace(replacement, target)
        await until_finished(state, target)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(SESSION_A.read_bytes()[:-100].rsplit(b"\n", 1)[0] + b"\n")  # the torn line is no line
    assert as_sets(store(db)) == replay_of(tmp_path, cut, SESSION_B)


async def test_a_compressed_session_file_is_followed(tmp_path: Path) -> None:
    sessions, state, db = tmp_path / "sessions", tmp_path / "state", tmp_path / "live.db"
    sessions.mkdir()
    async with following([sessions], state, db):
        target = sessions / (SESSION_B.name + ".zst")
        target.write_bytes(zstandard.ZstdCompressor().compress(SESSION_B.read_bytes()))
        await until_finished(state, target)
    assert as_sets(store(db)) == replay_of(tmp_path, SESSION_B)


async def test_a_file_compressed_once_finished_is_the_same_session(tmp_path: Path) -> None:
    sessions, state, db = tmp_path / "sessions", tmp_path / "state", tmp_path / "live.db"
    sessions.mkdir()
    plain = sessions / SESSION_B.name
    plain.write_bytes(SESSION_B.read_bytes())
    async with following([sessions], state, db) as sink:
        await until_finished(state, plain)
        written = sink.ops
        compressed = plain.with_name(plain.name + ".zst")
        compressed.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
        plain.unlink()  # as `zstd --rm` does
        await until_finished(state, compressed)
        assert sink.ops - written == 0, "the compressed copy must add nothing"
    assert as_sets(store(db)) == replay_of(tmp_path, SESSION_B)


async def test_a_compressed_file_of_a_session_cut_short_adds_the_rest(tmp_path: Path) -> None:
    """The daemon was down while the session ended and its file was compressed: the compressed file
    takes over where the plain one's checkpoint stood, and the store is the whole session's."""
    sessions, state, db = tmp_path / "sessions", tmp_path / "state", tmp_path / "live.db"
    sessions.mkdir()
    plain = sessions / SESSION_B.name
    data = SESSION_B.read_bytes()
    half = data[: data.index(b"\n", len(data) // 2) + 1]
    plain.write_bytes(half)
    async with following([sessions], state, db):
        await until_finished(state, plain)
    plain.with_name(plain.name + ".zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    plain.unlink()
    async with following([sessions], state, db):
        await until_finished(state, plain.with_name(plain.name + ".zst"))
    # The half was finished once on its own (its end-of-stream facts), as a replay of both files does.
    half_file = tmp_path / "half.jsonl"
    half_file.write_bytes(half)
    assert as_sets(store(db)) == replay_of(tmp_path, half_file, SESSION_B)


async def test_a_followed_directory_removed_does_not_stop_the_others(tmp_path: Path) -> None:
    gone, kept, state, db = tmp_path / "gone", tmp_path / "kept", tmp_path / "state", tmp_path / "live.db"
    gone.mkdir()
    kept.mkdir()
    async with following([gone, kept], state, db):
        await anyio.sleep(0.3)
        gone.rmdir()
        await anyio.sleep(0.5)
        target = kept / SESSION_A.name
        target.write_bytes(SESSION_A.read_bytes())
        await until_finished(state, target)
    assert as_sets(store(db)) == replay_of(tmp_path, SESSION_A)
