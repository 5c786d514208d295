"""The checkpoint table (ingestor.checkpoints) and the sink that saves checkpoints only once the
operations before them are durable (ingestor.sinks.checkpointing)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from ingestor.checkpoints import FORGET_AFTER_NS, Checkpoint, Checkpoints, checkpoint_op, fingerprint
from ingestor.ops import AppendEventArgs, Op
from ingestor.sinks.checkpointing import CheckpointingSink

pytestmark = pytest.mark.anyio


def mark(path: str, lines: int, *, finished: bool = False) -> Checkpoint:
    return Checkpoint(path, 1, 2, 5, fingerprint(b"first"), lines * 10, lines, lines * 10, 7, finished)


def event(n: int) -> Op:
    args: AppendEventArgs = {"conversationId": "c", "method": "m", "receivedAt": n}
    return {"op": "appendEvent", "key": f"e{n}", "args": args}


def test_checkpoints_survive_a_reopen(tmp_path: Path) -> None:
    table = Checkpoints(tmp_path)
    table.save([mark("/s/a.jsonl", 3), mark("/s/b.jsonl", 1, finished=True)])
    table.save([mark("/s/a.jsonl", 4)])
    table.close()
    again = Checkpoints(tmp_path)
    assert again.by_path == {
        "/s/a.jsonl": mark("/s/a.jsonl", 4),
        "/s/b.jsonl": mark("/s/b.jsonl", 1, finished=True),
    }
    assert (tmp_path / "checkpoints.db").stat().st_mode & 0o777 == 0o600


def test_files_gone_for_long_are_forgotten_and_other_runs_files_kept(tmp_path: Path) -> None:
    table = Checkpoints(tmp_path)
    table.save([mark("/s/gone.jsonl", 1), mark("/s/back.jsonl", 1), mark("/archive/x.jsonl", 1)])
    watched = lambda path: path.startswith("/s/")  # noqa: E731
    table.forget_missing({"/s/back.jsonl"}, watched, now_ns=0)
    table.forget_missing(set(), watched, now_ns=FORGET_AFTER_NS // 2)  # back.jsonl gone since then
    table.forget_missing({"/s/back.jsonl"}, watched, now_ns=FORGET_AFTER_NS // 2 + 1)
    table.forget_missing({"/s/back.jsonl"}, watched, now_ns=FORGET_AFTER_NS + 1)
    assert sorted(table.by_path) == ["/archive/x.jsonl", "/s/back.jsonl"]
    table.close()
    assert sorted(Checkpoints(tmp_path).by_path) == ["/archive/x.jsonl", "/s/back.jsonl"]


class Recording:
    def __init__(self, fail: bool = False) -> None:
        self.written: list[list[Op]] = []
        self.fail = fail

    async def write(self, ops: Sequence[Op]) -> None:
        if self.fail:
            raise OSError("disk full")
        self.written.append(list(ops))

    async def write_batches(self, batches: Sequence[Sequence[Op]]) -> None:
        for ops in batches:
            await self.write(ops)

    async def aclose(self) -> None:
        pass


async def test_markers_never_reach_the_store_and_are_saved_after_it_accepted_the_ops(tmp_path: Path) -> None:
    table = Checkpoints(tmp_path)
    inner = Recording()
    sink = CheckpointingSink(inner, table)
    await sink.write(
        [event(1), checkpoint_op(mark("/s/a.jsonl", 1)), event(2), checkpoint_op(mark("/s/a.jsonl", 2))]
    )
    assert inner.written == [[event(1), event(2)]]
    assert table.by_path["/s/a.jsonl"].lines == 2


async def test_a_failed_write_saves_no_checkpoint(tmp_path: Path) -> None:
    table = Checkpoints(tmp_path)
    table.save([mark("/s/a.jsonl", 1)])
    sink = CheckpointingSink(Recording(fail=True), table)
    with pytest.raises(OSError):
        await sink.write([event(2), checkpoint_op(mark("/s/a.jsonl", 2))])
    assert table.by_path["/s/a.jsonl"].lines == 1
    table.close()
    assert Checkpoints(tmp_path).by_path["/s/a.jsonl"].lines == 1
