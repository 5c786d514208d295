"""The unit every source produces: one framed input line, with where and when it arrived."""

from __future__ import annotations

from dataclasses import dataclass


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which tripled the cost
# of making the one object every input line gets. Treat it as immutable all the same.
@dataclass(slots=True)
class Line:
    source: str
    """Which input stream: `stdin`, `unix:PATH#N`, `tcp:HOST:PORT#N`, `file:PATH`."""
    ordinal: int
    """0-based position of the line in its stream (stable across replays of the same input)."""
    received_at: int
    """Epoch milliseconds when the newline arrived."""
    data: bytes
    """The line without its newline (a trailing CR is removed). Truncated when `oversize` is set."""
    oversize: int | None = None
    """The full length in bytes when the line exceeded the limit; `data` then holds its first bytes."""
