"""Standard input as one stream (`Line.source` = `stdin`)."""

from __future__ import annotations

import sys

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ingestor.sources import StreamHandler
from ingestor.sources.fd import read_fd


class StdinSource:
    def __init__(self, fd: int | None = None) -> None:
        self._fd = sys.stdin.fileno() if fd is None else fd

    async def serve(
        self, handle: StreamHandler, *, task_status: TaskStatus[str] = TASK_STATUS_IGNORED
    ) -> None:
        task_status.started("stdin")
        await handle("stdin", read_fd(self._fd))
