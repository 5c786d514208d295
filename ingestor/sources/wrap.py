"""`ingestor wrap -- COMMAND...`: run a Codex command, pass its output through, ingest the same bytes.

The command inherits standard input and standard error (an IDE talking to `codex app-server` writes
straight to it); its standard output goes through a relay thread that writes every read, unchanged, to
our standard output and appends it to a spill file in the state directory. The pipeline reads that
file at its own pace: the relay never waits for the pipeline or the sink, so the command runs as fast
as it would alone, and memory stays bounded whatever the sink does. What the pipeline could not read
before the run ended stays in the file (`WrapSource.spill` tells where); a replay of it stores it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Final

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ingestor.errors import SourceConfigError
from ingestor.sources import StreamHandler

READ_SIZE: Final = 64 * 1024


class WrapSource:
    def __init__(self, command: Sequence[str], spill_dir: Path) -> None:
        if not command:
            raise SourceConfigError("wrap needs a command: ingestor wrap -- codex exec --json ...")
        self._command = list(command)
        spill_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.spill = spill_dir / f"wrap-{os.getpid()}.jsonl"
        self.process: subprocess.Popen[bytes] | None = None
        self.drained = False
        """The pipeline read everything the command wrote (the spill file is then removed)."""
        self.output_ended = 0.0
        """When (monotonic) the command's output ended."""

    async def serve(
        self, handle: StreamHandler, *, task_status: TaskStatus[str] = TASK_STATUS_IGNORED
    ) -> None:
        try:
            process = subprocess.Popen(self._command, stdout=subprocess.PIPE)
        except OSError as error:
            raise SourceConfigError(f"cannot run {self._command[0]}: {error.strerror}") from error
        self.process = process
        assert process.stdout is not None
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        spill = os.open(self.spill, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        relay = threading.Thread(
            target=self._relay,
            args=(process.stdout.fileno(), spill, wake_write),
            name="wrap-relay",
            daemon=True,
        )
        relay.start()
        task_status.started(f"wrap: {self._command[0]} (pid {process.pid})")
        try:
            await handle(f"wrap:{self._command[0]}", self._read_spill(relay, wake_read))
        finally:
            os.close(wake_read)
        if self.drained:
            self.spill.unlink(missing_ok=True)

    def _relay(self, source: int, spill: int, wake: int) -> None:
        """The command's output to our standard output and the spill file, as it comes; ends with it."""
        try:
            stdout_open = True
            while data := os.read(source, READ_SIZE):
                if stdout_open:
                    try:
                        _write_all(1, data)
                    except BrokenPipeError:
                        stdout_open = False  # our reader left; the command's output is still captured
                _write_all(spill, data)
                with contextlib.suppress(BlockingIOError):
                    os.write(wake, b"\0")  # a full wake pipe already says "read"
        finally:
            self.output_ended = time.monotonic()
            os.close(spill)
            with contextlib.suppress(OSError):
                os.write(wake, b"\0")
            os.close(wake)

    async def _read_spill(self, relay: threading.Thread, wake: int) -> AsyncGenerator[bytes, None]:
        fd = os.open(self.spill, os.O_RDONLY)
        try:
            while True:
                data = os.read(fd, READ_SIZE)
                if data:
                    yield data
                    continue
                if not relay.is_alive():
                    if not os.read(fd, 1):  # what the relay wrote before it ended is read too
                        self.drained = True
                        return
                    os.lseek(fd, -1, os.SEEK_CUR)
                    continue
                await anyio.wait_readable(wake)
                with contextlib.suppress(BlockingIOError):
                    os.read(wake, 4096)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # a non-blocking descriptor shared with another process: it drains
            time.sleep(0.001)
