"""Listening sockets: every accepted connection is its own stream, many producers at once.

`Line.source` is `unix:PATH#N` / `tcp:HOST:PORT#N`, N counting connections from 0 in this process.
With a `ProducerAuth`, a connection reaches the pipeline only once its hello line carried the token.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import stat
from collections.abc import AsyncGenerator
from typing import Final

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import ByteReceiveStream, ByteStream, Listener, TaskStatus

from ingestor.errors import SourceConfigError
from ingestor.logging import get_logger
from ingestor.sources import StreamHandler
from ingestor.sources.accept import ConnectionLimit, accept_forever, default_max_connections
from ingestor.sources.auth import ProducerAuth
from ingestor.sources.tls import handshake

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


def _peer(stream: ByteStream, prefix: str) -> str:
    """Who is connecting, for logging a refused producer once: the remote IP (not the port, new on
    every connection), or the peer's uid on a Unix socket."""
    if prefix.startswith("tcp:"):
        return str(stream.extra(anyio.abc.SocketAttribute.remote_address)[0])
    raw: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    uid = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)[4:8]  # struct ucred: pid, uid, gid
    return f"{prefix} uid {int.from_bytes(uid, 'little')}"


async def _serve(
    listener: Listener[ByteStream],
    prefix: str,
    handle: StreamHandler,
    limit: ConnectionLimit,
    auth: ProducerAuth | None,
    tls: ssl.SSLContext | None = None,
) -> None:
    counter = 0

    async def on_connection(stream: ByteStream) -> None:
        nonlocal counter
        name = f"{prefix}#{counter}"
        counter += 1
        if tls is not None:
            secured = await handshake(stream, tls)
            if secured is None:
                return
            stream = secured
        async with stream:
            chunks = _chunks(stream)
            if auth is not None:
                admitted = await auth.admit(_peer(stream, prefix), chunks)
                if admitted is None:
                    return
                chunks = admitted
            await handle(name, chunks)

    await accept_forever(listener, prefix, on_connection, limit)


DEFAULT_UNIX_MODE: Final = 0o600


class UnixSource:
    def __init__(
        self,
        path: str,
        limit: ConnectionLimit | None = None,
        *,
        mode: int = DEFAULT_UNIX_MODE,
        auth: ProducerAuth | None = None,
    ) -> None:
        self._path = path
        self._limit = limit or ConnectionLimit(default_max_connections())
        self._mode = mode
        self._auth = auth

    async def serve(
        self, handle: StreamHandler, *, task_status: TaskStatus[str] = TASK_STATUS_IGNORED
    ) -> None:
        _remove_stale_socket(self._path)
        # The socket file is created with the umask's mode, then chmod-ed: a restrictive umask
        # meanwhile means no moment where others could connect, whatever the process's umask. It is
        # made listening under a temporary name and then renamed into place, so that the path never
        # names a socket that refuses connections (a producer, or a second daemon's liveness probe,
        # would take it for a dead one).
        umask = os.umask(0o177)
        staging = os.path.join(os.path.dirname(self._path), f".{os.getpid()}.sock")  # short: sun_path
        try:
            listener = await anyio.create_unix_listener(staging, mode=self._mode)
            os.rename(staging, self._path)
        except OSError as error:
            raise SourceConfigError(_unix_error(self._path, error)) from error
        finally:
            os.umask(umask)
        log.info("listening", address=f"unix:{self._path}", mode=f"{self._mode:o}")
        task_status.started(self._path)
        try:
            await _serve(listener, f"unix:{self._path}", handle, self._limit, self._auth)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)


def _unix_error(path: str, error: OSError) -> str:
    directory = os.path.dirname(path) or "."
    if isinstance(error, FileNotFoundError):
        return f"--unix {path}: the directory {directory} does not exist: create it, or choose another path"
    if isinstance(error, PermissionError):
        return f"--unix {path}: no permission to create a socket in {directory}: choose another directory"
    return f"--unix {path}: cannot listen there: {error.strerror or error}"


def _remove_stale_socket(path: str) -> None:
    """A previous run killed hard leaves its socket file behind; bind would fail on it. Only a socket
    nobody listens on is removed: a live one belongs to another daemon (taking it over would orphan
    that daemon's producers), and any other file at that path is a mistake worth an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)  # a listener whose backlog is full does not answer at once
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)
            return
        except (PermissionError, TimeoutError):
            pass  # someone else's socket, or a busy listener: not ours to remove either way
    raise SourceConfigError(f"--unix {path}: another process is listening on this socket")


def parse_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPV6]:PORT` or `:PORT` (all interfaces)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def _tcp_error(host: str, port: int, error: OSError) -> str:
    address = f"--tcp {host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return f"{address}: the port is in use (another daemon?): stop that process, or choose another port"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{address}: this machine has no address {host}: use one of its own, or 127.0.0.1"
    if isinstance(error, PermissionError):
        return f"{address}: no permission to listen on port {port} (below 1024?): choose a port above 1023"
    return f"{address}: cannot listen there: {error.strerror or error}"


class TcpSource:
    def __init__(
        self,
        address: str,
        limit: ConnectionLimit | None = None,
        *,
        auth: ProducerAuth | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._host, self._port = parse_host_port(address)
        self._limit = limit or ConnectionLimit(default_max_connections())
        self._auth = auth
        self._tls = tls

    async def serve(
        self, handle: StreamHandler, *, task_status: TaskStatus[str] = TASK_STATUS_IGNORED
    ) -> None:
        try:
            listener = await anyio.create_tcp_listener(local_host=self._host or None, local_port=self._port)
        except OSError as error:
            raise SourceConfigError(_tcp_error(self._host, self._port, error)) from error
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        host = self._host or "*"
        log.info("listening", address=f"tcp:{host}:{port}", tls=self._tls is not None)
        task_status.started(f"{host}:{port}")
        await _serve(listener, f"tcp:{host}:{port}", handle, self._limit, self._auth, self._tls)
