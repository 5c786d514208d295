"""Newline framing: an incremental splitter turning arbitrary byte chunks into `Line`s.

Pure (no I/O): sources read bytes however suits them and feed every chunk here. The hot path works
per chunk (one `bytes.split`), not per byte, so replaying a file costs a few microseconds a line.
"""

from __future__ import annotations

from typing import Final

from ingestor.lines import Line

DEFAULT_MAX_LINE_BYTES: Final = 16 * 1024 * 1024
OVERSIZE_KEEP_BYTES: Final = 64 * 1024
"""How much of an oversize line is kept in `Line.data`: enough to see what it was."""


class LineSplitter:
    """Splits one input stream into lines; one instance per stream.

    - `\\n` ends a line; a `\\r` right before it is dropped (CRLF producers).
    - Empty lines are skipped but still counted, so `ordinal` is the physical line index.
    - A line longer than `max_line_bytes` becomes a `Line` with `oversize` = its length and `data` =
      its first bytes; the rest is discarded as it arrives, so memory stays bounded.
    - `finish()` at end of input returns a last line that had no newline.
    """

    __slots__ = (
        "_discard_cr",
        "_discard_len",
        "_discarding",
        "_head",
        "_keep",
        "_max",
        "_ordinal",
        "_parts",
        "_parts_len",
        "_source",
    )

    def __init__(self, source: str, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self._source = source
        self._max = max_line_bytes
        self._keep = min(OVERSIZE_KEEP_BYTES, max_line_bytes)
        self._ordinal = 0
        # The unterminated tail of the stream, kept as a list of chunks so that a long line
        # arriving in many small reads is joined once (no quadratic re-concatenation).
        self._parts: list[bytes] = []
        self._parts_len = 0
        # Discard mode: inside a line already known to be oversize.
        self._discarding = False
        self._head = b""
        self._discard_len = 0
        self._discard_cr = False  # whether the last discarded byte was `\r` (not part of the length)

    @property
    def ordinal(self) -> int:
        """The ordinal the next line will get."""
        return self._ordinal

    def feed(self, chunk: bytes, received_at: int) -> list[Line]:
        """Split `chunk` (any size, any boundary); return the lines it completes."""
        out: list[Line] = []
        if not chunk:
            return out
        start = 0
        if self._discarding or self._parts:
            newline = chunk.find(b"\n")
            if newline < 0:
                self._extend_tail(chunk)
                return out
            self._extend_tail(chunk[:newline])
            self._emit_tail(out, received_at)
            start = newline + 1
            if start == len(chunk):
                return out
        body = chunk[start:] if start else chunk
        parts = body.split(b"\n")
        rest = parts.pop()
        if b"\r" in body:  # one C-level scan per chunk spares a per-line check for LF-only input
            parts = [p[:-1] if p[-1:] == b"\r" else p for p in parts]
        self._split_complete(parts, received_at, out)
        if rest:
            self._extend_tail(rest)
        return out

    @property
    def unfinished_bytes(self) -> int:
        """Bytes of a line whose newline has not arrived (what `finish` would make a last line of)."""
        return self._discard_len + len(self._head) if self._discarding else self._parts_len

    def finish(self, received_at: int) -> list[Line]:
        """End of input: the last line, if it had no newline."""
        out: list[Line] = []
        if self._discarding or self._parts:
            self._emit_tail(out, received_at)
        return out

    def _split_complete(self, parts: list[bytes], received_at: int, out: list[Line]) -> None:
        # The per-line loop of the whole daemon: keep it to a few bytecodes per line.
        source = self._source
        limit = self._max
        keep = self._keep
        ordinal = self._ordinal
        append = out.append
        for part in parts:
            if part:
                if len(part) > limit:
                    append(Line(source, ordinal, received_at, part[:keep], len(part)))
                else:
                    append(Line(source, ordinal, received_at, part))
            ordinal += 1
        self._ordinal = ordinal

    def _extend_tail(self, data: bytes) -> None:
        if not data:
            return
        if self._discarding:
            if self._discard_cr:
                self._discard_len += 1
            self._discard_cr = data[-1:] == b"\r"
            self._discard_len += len(data) - self._discard_cr
            return
        self._parts.append(data)
        self._parts_len += len(data)
        # One byte of slack: a trailing `\r` may still turn out to be part of a CRLF.
        if self._parts_len > self._max + 1:
            joined = b"".join(self._parts)
            self._parts.clear()
            self._parts_len = 0
            self._discarding = True
            self._head = joined[: self._keep]
            self._discard_cr = joined[-1:] == b"\r"
            self._discard_len = len(joined) - self._discard_cr

    def _emit_tail(self, out: list[Line], received_at: int) -> None:
        if self._discarding:
            out.append(Line(self._source, self._ordinal, received_at, self._head, self._discard_len))
            self._discarding = False
            self._head = b""
            self._discard_len = 0
            self._discard_cr = False
        else:
            line = b"".join(self._parts)
            self._parts.clear()
            self._parts_len = 0
            if line[-1:] == b"\r":
                line = line[:-1]
            if line:
                if len(line) > self._max:
                    line_len = len(line)
                    line = line[: self._keep]
                    out.append(Line(self._source, self._ordinal, received_at, line, line_len))
                else:
                    out.append(Line(self._source, self._ordinal, received_at, line))
        self._ordinal += 1
