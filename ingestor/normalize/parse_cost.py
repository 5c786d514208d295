"""Whether parsing a line could cost too much memory, decided from its text before it is parsed.

A line's parsed value can take 35 times its text: one 15 MiB line of empty lists parsed into 530 MB
of Python objects. A line of at least `CHECK_FROM_BYTES` is parsed only if an estimate of its parsed
size, `BYTES_PER_VALUE` per value plus `BYTES_PER_CONTAINER` per list or object (counted outside
strings), is at most `MAX_PARSED_RATIO` times its length; raw.py keeps the others as their text.
Real Codex lines that long are mostly strings (command output, diffs, file contents) and pass.
"""

from __future__ import annotations

import re
from typing import Final

CHECK_FROM_BYTES: Final = 64 * 1024
"""Shorter lines are always parsed (at most a few MiB of objects each) and never scanned."""
MAX_PARSED_RATIO: Final = 8
BYTES_PER_VALUE: Final = 64
"""A value's object and its slot in its container (a short string, a float, an int: 32-70 bytes)."""
BYTES_PER_CONTAINER: Final = 192
"""A list's or dict's own object beyond its slot (an empty list 56 bytes, a small dict 180-360)."""

# A JSON string, escapes included, matched without backtracking.
_STRING: Final = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)


def too_costly_to_parse(data: bytes) -> bool:
    """Whether `data` (one line) is long and dense enough in values to be kept unparsed."""
    if len(data) < CHECK_FROM_BYTES:
        return False
    budget = MAX_PARSED_RATIO * len(data)
    # Counting inside strings too gives an upper bound at the cost of three C-level scans: enough
    # for most lines, which are mostly long strings.
    if _estimate(data) <= budget:
        return False
    return _estimate(_STRING.sub(b"", data)) > budget


def _estimate(text: bytes) -> int:
    containers = text.count(b"[") + text.count(b"{")
    return BYTES_PER_VALUE * (text.count(b",") + 1) + BYTES_PER_CONTAINER * containers
