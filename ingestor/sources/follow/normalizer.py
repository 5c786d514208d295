"""The normalizer of a followed file: the stream's own normalizer, told where the file stands.

- Lines before `Tail.skip_lines` are stored already: they are fed (the normalizer's state, such as the
  current turn, the command sequence, occurrence counts, is a function of the lines fed so far, so
  feeding them again rebuilds exactly the state they left) and their operations dropped. What follows
  gets the operations, and the keys, a one-shot replay of the whole file gives.
- After the lines of a read that completed lines comes a checkpoint marker (saved once durable).
- A line past the last newline read is a torn write, not a line: dropped (the stream only ends there
  when stopped or reopened; the rest of the line is read again with its newline).
- After each read's lines, whether the file's end would be a guess now (`Tail.hold`: a Codex 0.63
  turn without a reply, or with a call running): a followed file is not finished by going quiet
  then, so that a long command or a long model call is not concluded before its lines arrive.
- `finish()` (end-of-stream facts) when the file was done with (finished, or its content ended by a
  truncation or a replacement), never when the daemon stops: the next run goes on with the stream;
  and not again when no line came since it was finished (a file compressed, or only touched).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ingestor.checkpoints import checkpoint_op
from ingestor.lines import Line
from ingestor.ops import Op
from ingestor.sources.follow.tail import Ending, Mark, Tail


class StreamNormalizer(Protocol):
    """What a followed file's stream needs of the normalizer the pipeline would give it (the pipeline's
    own protocol, `ingestor.pipeline.StreamNormalizer`, is a layer above the sources)."""

    derive_errors: int
    bad_lines: dict[str, int]

    def feed_into(self, line: Line, out: list[Op]) -> None: ...

    def finish(self) -> list[Op]: ...

    def end_is_a_guess(self) -> bool: ...


NormalizerFactory = Callable[[str], StreamNormalizer]


class FollowedNormalizer:
    __slots__ = ("_inner", "_scratch", "_skipped_errors", "_tail", "bad_lines", "derive_errors")

    def __init__(self, inner: StreamNormalizer, tail: Tail) -> None:
        self._inner = inner
        self._tail = tail
        self._scratch: list[Op] = []
        self._skipped_errors = 0
        self.derive_errors = 0
        self.bad_lines = inner.bad_lines
        """The inner normalizer's counts (lines read again after a restart are counted again)."""
        """The inner normalizer's count, less what lines stored already counted (not counted twice)."""

    def feed_into(self, line: Line, out: list[Op]) -> None:
        tail = self._tail
        ordinal = line.ordinal
        if ordinal >= tail.lines_read:
            return
        inner = self._inner
        if ordinal < tail.skip_lines:
            inner.feed_into(line, self._scratch)
            self._scratch.clear()
            self._skipped_errors = inner.derive_errors
        else:
            inner.feed_into(line, out)
            self.derive_errors = inner.derive_errors - self._skipped_errors
        marks = tail.marks
        if marks and marks[0].lines <= ordinal + 1:
            mark = marks.popleft()
            while marks and marks[0].lines <= ordinal + 1:
                mark = marks.popleft()
            tail.hold = inner.end_is_a_guess()
            if mark.lines > tail.skip_lines:
                out.append(checkpoint_op(tail.checkpoint(mark)))

    def end_is_a_guess(self) -> bool:
        return self._inner.end_is_a_guess()

    def finish(self) -> list[Op]:
        tail = self._tail
        if tail.ending is Ending.STOPPED:
            return []
        mark = Mark(tail.lines_read, tail.offset)
        if tail.finished_before and tail.lines_read <= tail.skip_lines:
            return [checkpoint_op(tail.checkpoint(mark, finished=True))]  # nothing new to conclude
        ops = self._inner.finish()
        self.derive_errors = self._inner.derive_errors - self._skipped_errors
        ops.append(checkpoint_op(tail.checkpoint(mark, finished=True)))
        return ops
