"""What the spool stores and reads back: ops joined by `SEP`, in batches for one request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SEP: Final = b",\n"
"""Between the ops of a row (and of a request body): a JSON separator that compact JSON never holds."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive ops from the head of the spool, as read for one request."""

    first: int
    """The number of the first op."""
    enqueued_at: int
    """When the oldest op was spooled (epoch ms)."""
    count: int
    size: int
    """The ops' encoded bytes, without separators."""
    parts: tuple[bytes, ...]
    """Row bodies (or a row's prefix): the ops joined by SEP."""

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def body(self) -> bytes:
        """The ops joined by SEP: what goes between the brackets of the `ops` array."""
        return self.parts[0] if len(self.parts) == 1 else SEP.join(self.parts)

    def ops(self) -> list[bytes]:
        """Each op's encoded body, in order."""
        bodies = [op for part in self.parts for op in part.split(SEP)]
        if len(bodies) != self.count:
            raise RuntimeError(f"spool batch at {self.first}: {len(bodies)} ops found, {self.count} expected")
        return bodies


def ops_within(bodies: list[bytes], max_ops: int, max_bytes: int) -> list[bytes]:
    """The first of `bodies` within `max_ops` and `max_bytes` (at least one)."""
    size = 0
    for index, body in enumerate(bodies):
        if index >= max_ops or (index and size + len(body) > max_bytes):
            return bodies[:index]
        size += len(body)
    return bodies
