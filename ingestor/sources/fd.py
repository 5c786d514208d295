"""Reading a pipe, TTY or other file descriptor as bytes arrive.

anyio's file wrappers run blocking reads in worker threads (one thread hop per read, and a read may
wait for a full buffer); a daemon piped to `codex exec --json` must see each line as soon as its
newline arrives. So: make the descriptor non-blocking and wait for readiness on the event loop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Final

import anyio

READ_SIZE: Final = 256 * 1024


async def read_fd(fd: int, size: int = READ_SIZE) -> AsyncGenerator[bytes, None]:
    """Yield whatever is readable from `fd`, up to `size` bytes at a time, until end of input."""
    was_blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while True:
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                await anyio.wait_readable(fd)
                continue
            if not data:
                return
            yield data
    finally:
        # The descriptor (its open file description) may be shared with the parent shell.
        os.set_blocking(fd, was_blocking)
