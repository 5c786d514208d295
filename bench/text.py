"""Deterministic filler text that looks like what Codex sessions carry (shell output, prose, code)."""

from __future__ import annotations

import random
from typing import Final

_WORDS: Final = [
    "the",
    "function",
    "returns",
    "a",
    "list",
    "of",
    "events",
    "for",
    "each",
    "thread",
    "and",
    "the",
    "daemon",
    "stores",
    "them",
    "in",
    "order",
    "error",
    "warning",
    "ok",
    "passed",
    "failed",
    "test",
    "build",
    "cargo",
    "pytest",
    "import",
    "module",
    "class",
    "def",
    "return",
    "self",
    "config",
    "value",
    "index",
    "key",
    "item",
    "turn",
    "command",
    "output",
    "delta",
    "token",
    "usage",
    "rate",
    "limit",
    "window",
    "reset",
    "résumé",
    "naïve",
    "✓",
    "→",
    "λ",
]

_SHELL: Final = (
    "-rw-r--r--  1 dev  staff  {n:>6} Nov 22 03:{m:02d} src/module_{n}.py",
    "tests/test_{n}.py::test_case_{m} PASSED                               [{m:>3}%]",
    "   Compiling crate-{n} v0.{m}.0",
    "{n}:{m}: warning: unused variable `value_{n}`",
    "diff --git a/pkg/file_{n}.ts b/pkg/file_{n}.ts",
    "+    const item{n} = await client.mutation(api.ingest.applyBatch, {{ ops }});",
    "drwxr-xr-x  {m} dev  staff    {n} Nov 22 02:{m:02d} dir_{n}",
)


class TextPool:
    """A large block of text generated once; slices of it are cheap and deterministic."""

    def __init__(self, rng: random.Random, size: int = 1 << 20) -> None:
        parts: list[str] = []
        total = 0
        while total < size:
            if rng.random() < 0.6:
                fmt = rng.choice(_SHELL)
                line = fmt.format(n=rng.randrange(10_000), m=rng.randrange(60)) + "\n"
            else:
                line = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(4, 16))) + ".\n"
            parts.append(line)
            total += len(line)
        self._text = "".join(parts)
        self._len = len(self._text)

    def take(self, rng: random.Random, size: int) -> str:
        """`size` characters (roughly bytes: the text is nearly all ASCII) from a random offset."""
        if size <= 0:
            return ""
        if size >= self._len:
            reps = size // self._len + 1
            return (self._text * reps)[:size]
        start = rng.randrange(self._len - size)
        return self._text[start : start + size]

    def words(self, rng: random.Random, count: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(count))
