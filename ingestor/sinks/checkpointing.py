"""A sink in front of another that records file checkpoints once their lines are durable.

Followed and checkpointed files put a marker (`ingestor.checkpoints.checkpoint_op`) into their
operation stream right after the operations of the lines it covers. Operations keep their order
from the normalizer to the sink (one batcher, one write at a time), so when the inner sink's
`write` returns (stored, or safe in the Convex spool), every operation before a marker is durable:
the markers are taken out before the write and saved to the checkpoint table after it. The pipeline
and the batcher know nothing of this.
"""

from __future__ import annotations

from collections.abc import Sequence

from ingestor.checkpoints import CHECKPOINT_OP, Checkpoint, Checkpoints, checkpoint_of
from ingestor.ops import Op
from ingestor.sinks.base import Leftover, Sink, Spooling


def _split(ops: Sequence[Op]) -> tuple[Sequence[Op], list[Checkpoint]]:
    marks = [checkpoint_of(op) for op in ops if op["op"] == CHECKPOINT_OP]
    if not marks:
        return ops, marks
    return [op for op in ops if op["op"] != CHECKPOINT_OP], marks


class CheckpointingSink:
    """`Sink` (and `Spooling`, passed through when the inner sink spools) that saves checkpoints."""

    def __init__(self, inner: Sink, checkpoints: Checkpoints) -> None:
        self._inner = inner
        self._checkpoints = checkpoints

    async def write(self, ops: Sequence[Op]) -> None:
        store_ops, marks = _split(ops)
        if store_ops:
            await self._inner.write(store_ops)
        self._checkpoints.save(marks)

    async def write_batches(self, batches: Sequence[Sequence[Op]]) -> None:
        """One call for several batches where the inner sink commits them at once (SQLite)."""
        split = [_split(batch) for batch in batches]
        store_batches = [ops for ops, _ in split if ops]
        write_batches = getattr(self._inner, "write_batches", None)
        if write_batches is not None:
            await write_batches(store_batches)
        else:
            for ops in store_batches:
                await self._inner.write(ops)
        self._checkpoints.save([mark for _, marks in split for mark in marks])

    async def aclose(self) -> None:
        await self._inner.aclose()

    def leftover(self) -> Leftover | None:
        return self._inner.leftover() if isinstance(self._inner, Spooling) else None

    def input_stopped(self) -> None:
        if isinstance(self._inner, Spooling):
            self._inner.input_stopped()
