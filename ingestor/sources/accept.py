"""Accepting connections so that no producer, and no number of them, can end the daemon.

Open connections are capped (`--max-connections`): beyond the cap, new producers wait in the
kernel's listen backlog, unread, until one closes. Nothing is refused and nothing is lost. The cap
stays below the process's file-descriptor limit, leaving room for the spool, the store and the
metrics listener; if `accept()` still runs out of descriptors (or kernel memory), the listener backs
off and tries again, logging once per incident and counting every failure.
"""

from __future__ import annotations

import errno
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
from anyio.abc import ByteStream, Listener, SocketListener, TaskGroup
from anyio.streams.stapled import MultiListener

from ingestor.logging import get_logger
from ingestor.metrics import METRICS, Metrics

DEFAULT_MAX_CONNECTIONS: Final = 1024
RESERVED_FDS: Final = 64
"""Descriptors kept free of connections: spool segments, SQLite and its WAL, logs, metrics."""

OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""accept() failures that last until something is freed: back off."""
CONNECTION_ERRORS: Final = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.EPERM,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
        errno.ETIMEDOUT,
    }
)
"""accept() failures of one pending connection (accept(2), "Error handling"): try the next at once."""

BACKOFF_FIRST: Final = 0.01
BACKOFF_MAX: Final = 1.0
INCIDENT_GAP: Final = 60.0
"""Seconds without a failed accept that end an incident (for the log: every failure is counted)."""

log = get_logger("ingestor.sources")

ConnectionHandler = Callable[[ByteStream], Awaitable[None]]


def default_max_connections() -> int:
    """1,024, or fewer when the open-files limit would not leave `RESERVED_FDS` beside them."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(1, min(DEFAULT_MAX_CONNECTIONS, soft - RESERVED_FDS))


class ConnectionLimit:
    """The cap on open connections, shared by every listener of the process."""

    def __init__(self, max_connections: int, metrics: Metrics = METRICS) -> None:
        self.max_connections = max_connections
        self._slots = anyio.Semaphore(max_connections)
        self.metrics = metrics
        self._at_cap = False

    async def acquire(self) -> None:
        if self._slots.value == 0 and not self._at_cap:
            self._at_cap = True
            log.warning(
                "connection cap reached: new producers wait in the listen backlog until one closes",
                max_connections=self.max_connections,
            )
        await self._slots.acquire()
        self.metrics.connections_open.inc()

    def release(self) -> None:
        self._slots.release()
        self.metrics.connections_open.dec()
        if self._at_cap and self._slots.statistics().tasks_waiting == 0:
            self._at_cap = False
            log.info("below the connection cap again", max_connections=self.max_connections)


class _AcceptFailures:
    """One listener's failed accepts: the wait before the next try, and its log lines. Failures
    less than `INCIDENT_GAP` apart are one incident (out of descriptors, accepts alternate between
    failing and succeeding as connections close), logged once when it starts and once when
    accepts first succeed again."""

    def __init__(self, address: str, metrics: Metrics) -> None:
        self._address = address
        self._metrics = metrics
        self._wait = 0.0
        self._failures = 0
        """In the current incident."""
        self._last_failure: float | None = None
        self._recovery_logged = False

    def failed(self, error: OSError) -> float:
        """Count `error`; the seconds to wait before accepting again."""
        reason = errno.errorcode.get(error.errno or 0, "unknown")
        self._metrics.accept_failures.labels(reason=reason).inc()
        if error.errno in CONNECTION_ERRORS:
            return 0.0
        now = time.monotonic()
        if self._last_failure is None or now - self._last_failure > INCIDENT_GAP:
            self._failures = 0
            self._recovery_logged = False
            log.error(
                "accept failed: backing off until resources are freed (connections already open go on)",
                address=self._address,
                error=str(error),
            )
        self._last_failure = now
        self._failures += 1
        self._wait = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._wait * 2))
        return self._wait

    def succeeded(self) -> None:
        self._wait = 0.0
        if self._failures and not self._recovery_logged:
            self._recovery_logged = True
            log.info("accepting again", address=self._address, failed_accepts=self._failures)


async def accept_forever(
    listener: Listener[ByteStream], address: str, handle: ConnectionHandler, limit: ConnectionLimit
) -> None:
    """Accept on `listener` (every socket of a multi-address listener) until cancelled."""
    sockets = listener.listeners if isinstance(listener, MultiListener) else [listener]
    async with listener, anyio.create_task_group() as tg:
        for socket_listener in sockets:
            if not isinstance(socket_listener, SocketListener):
                raise TypeError(f"not a socket listener: {socket_listener!r}")
            tg.start_soon(_accept_loop, socket_listener, address, handle, limit, tg)


async def _accept_loop(
    listener: SocketListener, address: str, handle: ConnectionHandler, limit: ConnectionLimit, tg: TaskGroup
) -> None:
    failures = _AcceptFailures(address, limit.metrics)
    while True:
        await limit.acquire()
        try:
            stream = await listener.accept()
        except (OSError, anyio.BrokenResourceError) as raised:
            limit.release()
            error = _accept_error(raised)
            if error is None:
                raise
            await anyio.sleep(failures.failed(error))
            continue
        failures.succeeded()
        tg.start_soon(_serve_connection, stream, handle, limit)


def _accept_error(raised: BaseException) -> OSError | None:
    """The accept failure to survive, if it is one (anyio raises BrokenResourceError from it)."""
    error = raised if isinstance(raised, OSError) else raised.__cause__
    if isinstance(error, OSError) and (error.errno in OUT_OF_RESOURCES or error.errno in CONNECTION_ERRORS):
        return error
    return None


async def _serve_connection(stream: ByteStream, handle: ConnectionHandler, limit: ConnectionLimit) -> None:
    try:
        await handle(stream)
    finally:
        limit.release()
