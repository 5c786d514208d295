"""Prometheus metrics and the `/healthz` + `/readyz` endpoints behind `--metrics HOST:PORT`.

The HTTP server runs its own event loop in a daemon thread: scrapes and probes never wait on the
pipeline's event loop, so a busy or blocked pipeline cannot make the process look dead.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_BATCH_OPS_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 8192)
_BATCH_BYTES_BUCKETS: Final = tuple(float(2**n) for n in range(10, 25, 2))
_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """Every metric the daemon exports, on one registry (tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_read = Counter("ingestor_events_read", "Input lines read by the pipeline.", registry=r)
        self.bad_lines = Counter(
            "ingestor_invalid_lines",
            "Input lines stored raw: not JSON (invalid_json), too long (oversize), too dense to parse"
            " (too_many_values).",
            ["reason"],
            registry=r,
        )
        self.derive_errors = Counter(
            "ingestor_derive_errors",
            "Lines stored raw only because their facts could not be read (a Codex format change?).",
            registry=r,
        )
        self.ops_delivered = Counter(
            "ingestor_ops_delivered",
            "Operations confirmed by the sink, by result.",
            ["result"],
            registry=r,
        )
        self.retries = Counter(
            "ingestor_delivery_retries",
            "Delivery attempts that will be retried, by cause.",
            ["cause"],
            registry=r,
        )
        self.dead_letters = Counter(
            "ingestor_dead_letters",
            "Operations written to the dead-letter file, by cause.",
            ["cause"],
            registry=r,
        )
        self.spool_ops = Gauge("ingestor_spool_ops", "Operations waiting in the spool.", registry=r)
        self.spool_bytes = Gauge("ingestor_spool_bytes", "Encoded bytes waiting in the spool.", registry=r)
        self.spool_quarantined = Counter(
            "ingestor_spool_quarantined",
            "Spool content unreadable on start, moved to spool-quarantine/: ops (rows whose segment "
            "was truncated or lost), index (the whole index unreadable, moved with every segment).",
            ["what"],
            registry=r,
        )
        self.batch_ops = Histogram(
            "ingestor_batch_ops", "Operations per delivered request.", buckets=_BATCH_OPS_BUCKETS, registry=r
        )
        self.batch_bytes = Histogram(
            "ingestor_batch_bytes",
            "Encoded bytes per delivered request.",
            buckets=_BATCH_BYTES_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "ingestor_request_seconds",
            "Duration of one Convex request.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery_latency = Histogram(
            "ingestor_delivery_latency_seconds",
            "From an operation's arrival in the spool to its confirmation (oldest op of each batch).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.producers_refused = Counter(
            "ingestor_producers_refused",
            "Socket connections closed unauthenticated (--auth-token-file), by reason.",
            ["reason"],
            registry=r,
        )
        self.connections_open = Gauge(
            "ingestor_connections_open", "Producer connections open (at most --max-connections).", registry=r
        )
        self.accept_failures = Counter(
            "ingestor_accept_failures",
            "Failed accepts on the listeners, by errno (EMFILE: out of file descriptors).",
            ["reason"],
            registry=r,
        )
        self.delivery_failures = Gauge(
            "ingestor_delivery_consecutive_failures",
            "Failed delivery attempts since the last success (0 while delivering).",
            registry=r,
        )
        self.oldest_undelivered_age = Gauge(
            "ingestor_oldest_undelivered_seconds",
            "Age of the batch being delivered (spooled this long ago); 0 when none is.",
            registry=r,
        )
        self.ready = Gauge("ingestor_ready", "1 when the sink is delivering, else 0.", registry=r)
        self.ready.set(1)
        self.files_followed = Gauge(
            "ingestor_follow_files", "Files followed with a stream open (run --follow).", registry=r
        )
        self.follow_bytes_behind = Gauge(
            "ingestor_follow_bytes_behind", "Bytes written to followed files and not read yet.", registry=r
        )
        self.follow_oldest_unread_age = Gauge(
            "ingestor_follow_oldest_unread_seconds",
            "How long the oldest unread bytes of a followed file have waited (since that file was "
            "last read to its end); 0 when none wait.",
            registry=r,
        )


METRICS: Final = Metrics()
"""The process-wide metrics; the pipeline bumps `METRICS.events_read`."""


class Health:
    """Readiness: ready unless some component has reported a reason not to be (thread-safe).

    A reason may start at a time still to come (`set_reason_from`): a failure that is not yet worth
    paging anyone becomes one by itself when it lasts, whether or not anything happens meanwhile."""

    def __init__(self, metrics: Metrics = METRICS) -> None:
        self._lock = threading.Lock()
        self._reasons: dict[str, float] = {}
        """Each reason, and the monotonic time from which it counts."""
        self._metrics = metrics
        metrics.ready.set_function(lambda: 0 if self.reasons else 1)

    def set_reason(self, reason: str, active: bool) -> None:
        if active:
            self.set_reason_from(reason, time.monotonic())
        else:
            with self._lock:
                self._reasons.pop(reason, None)

    def set_reason_from(self, reason: str, when: float) -> None:
        """`reason` holds from monotonic time `when` on (until `set_reason(reason, False)`)."""
        with self._lock:
            self._reasons[reason] = when

    @property
    def reasons(self) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            return frozenset(reason for reason, since in self._reasons.items() if since <= now)


HEALTH: Final = Health()


def parse_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9464` for IPv6); raises ValueError with a readable message."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


REQUEST_TIMEOUT: Final = 5.0
"""Seconds a connection may take to send its request and read the answer before it is closed."""
MAX_CONNECTIONS: Final = 64
"""Open connections at most; a new one closes the oldest (a probe's is always the newest)."""
MAX_REQUEST_BYTES: Final = 16 * 1024


class MetricsServer:
    """Serves `/metrics`, `/healthz` (the process answers) and `/readyz` (the sink is delivering).

    One thread runs its own event loop for every connection (no thread per connection, so idle or
    slow clients cost a socket each and nothing more): each has REQUEST_TIMEOUT seconds for its
    request and answer, and at most `max_connections` are open at once, so a flood of idle
    connections can neither make the probes time out nor use up the descriptors producers need.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics = METRICS,
        health: Health = HEALTH,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._timeout = request_timeout
        self._max_connections = max_connections
        # Bound here, so that a port in use fails the start, not a background thread.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family)
        self._open: dict[asyncio.StreamWriter, asyncio.Task[None] | None] = {}  # oldest first
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                                        name="metrics", daemon=True)  # fmt: skip

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join()
        self._loop.close()
        self._socket.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._connection, sock=self._socket, limit=MAX_REQUEST_BYTES)
        async with server:
            await self._stopped.wait()
            tasks = [task for task in self._open.values() if task is not None]
            for writer in list(self._open):
                writer.transport.abort()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open[writer] = asyncio.current_task()
        if len(self._open) > self._max_connections:
            oldest = next(iter(self._open))  # a probe's connection is the newest: never this one
            del self._open[oldest]
            oldest.transport.abort()
        try:
            async with asyncio.timeout(self._timeout):
                head = await reader.readuntil(b"\r\n\r\n")
                status, body, content_type = self._answer(head)
                writer.write(
                    f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + (b"" if head.startswith(b"HEAD ") else body)
                )
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # too slow, too long, or gone: closed below, without an answer
        finally:
            self._open.pop(writer, None)
            writer.transport.abort()

    def _answer(self, head: bytes) -> tuple[int, bytes, str]:
        text = "text/plain; charset=utf-8"
        method, _, rest = head.partition(b" ")
        if method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed\n", text
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if path == b"/metrics":
            return 200, generate_latest(self._metrics.registry), CONTENT_TYPE_LATEST
        if path == b"/healthz":
            return 200, b"ok\n", text
        if path == b"/readyz":
            reasons = self._health.reasons
            if reasons:
                return 503, ("not ready: " + ", ".join(sorted(reasons)) + "\n").encode(), text
            return 200, b"ready\n", text
        return 404, b"not found\n", text


@contextmanager
def serving(address: str | None) -> Iterator[MetricsServer | None]:
    """Serve the process-wide metrics on `HOST:PORT` for the duration (nothing when None)."""
    if address is None:
        yield None
        return
    server = MetricsServer(*parse_host_port(address))
    server.start()
    try:
        yield server
    finally:
        server.close()
