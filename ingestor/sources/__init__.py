"""Sources: where input bytes come from. Each one hands every input stream it opens to a handler.

A stream is a name (becomes `Line.source`) and an async iterator of raw byte chunks; the pipeline
frames, normalizes and stores it. Sources know nothing about lines or operations.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

StreamHandler = Callable[[str, AsyncGenerator[bytes, None]], Awaitable[None]]
"""Called once per input stream, in the task that should process it; returns at its end."""


class Source(Protocol):
    async def serve(
        self, handle: StreamHandler, *, task_status: TaskStatus[str] = TASK_STATUS_IGNORED
    ) -> None:
        """Feed every stream to `handle`. Calls `task_status.started(address)` once ready to accept
        input (the bound address for listeners). Returns when there can be no more input (stdin and
        files at their end); listeners run until cancelled."""
