"""Listening sockets: every accepted connection is its own stream, many producers at once.

`Line.source` is `unix:PATH#N` / `tcp:HOST:PORT#N`, N counting connections from 0 in this process.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncGenerator
from typing import Final

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import ByteReceiveStream, ByteStream, Listener, TaskStatus

from ingestor.logging import get_logger
from ingestor.sources import StreamHandler
from ingestor.sources.accept import ConnectionLimit, accept_forever, default_max_connections

RECEIVE_SIZE: Final = 256 * 1024

log = get_logger("ingestor.sources")


async def _chunks(stream: ByteReceiveStream) -> AsyncGenerator[bytes, None]:
    # Socket receives return as soon as any data is there: a line is handled when it arrives.
    while True:
        try:
            data = await stream.receive(RECEIVE_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return
        yield data


async def _serve(
    listener: Listener[ByteStream], prefix: str, handle: StreamHandler, limit: ConnectionLimit
) -> None:
    counter = 0

    async def on_connection(stream: ByteStream) -> None:
        nonlocal counter
        name = f"{prefix}#{counter}"
        counter += 1
        async with stream:
            await handle(name, _chunks(stream))

    await accept_forever(listener, prefix, on_connection, limit)


class UnixSource:
    def __init__(self, path: str, limit: ConnectionLimit | None = None) -> None:
        self._path = path
        self._limit = limit or ConnectionLimit(default_max_connections())

    async def serve(
        self, handle: StreamHandler, *, task_status: TaskStatus[str] = TASK_STATUS_IGNORED
    ) -> None:
        _remove_stale_socket(self._path)
        listener = await anyio.create_unix_listener(self._path)
        log.info("listening", address=f"unix:{self._path}")
        task_status.started(self._path)
        try:
            await _serve(listener, f"unix:{self._path}", handle, self._limit)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)


def _remove_stale_socket(path: str) -> None:
    """A previous run killed hard leaves its socket file behind; bind would fail on it. Only a socket
    is removed: any other file at that path is a mistake worth an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(mode):
        os.unlink(path)


def parse_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPV6]:PORT` or `:PORT` (all interfaces)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


class TcpSource:
    def __init__(self, address: str, limit: ConnectionLimit | None = None) -> None:
        self._host, self._port = parse_host_port(address)
        self._limit = limit or ConnectionLimit(default_max_connections())

    async def serve(
        self, handle: StreamHandler, *, task_status: TaskStatus[str] = TASK_STATUS_IGNORED
    ) -> None:
        listener = await anyio.create_tcp_listener(local_host=self._host or None, local_port=self._port)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        host = self._host or "*"
        log.info("listening", address=f"tcp:{host}:{port}")
        task_status.started(f"{host}:{port}")
        await _serve(listener, f"tcp:{host}:{port}", handle, self._limit)
