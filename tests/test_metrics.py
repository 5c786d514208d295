"""`--metrics`: Prometheus text, liveness and readiness over HTTP."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from ingestor.metrics import MAX_CONNECTIONS, Health, Metrics, MetricsServer, parse_host_port


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_endpoints() -> None:
    metrics = Metrics(CollectorRegistry())
    health = Health(metrics)
    server = MetricsServer("127.0.0.1", 0, metrics, health)
    server.start()
    try:
        base = "http://{}:{}".format(*server.address)
        metrics.events_read.inc(3)
        status, body = get(base + "/metrics")
        assert status == 200 and "ingestor_events_read_total 3.0" in body
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/readyz") == (200, "ready\n")
        health.set_reason("convex_auth", True)
        assert get(base + "/readyz") == (503, "not ready: convex_auth\n")
        assert get(base + "/healthz")[0] == 200
        health.set_reason("convex_auth", False)
        assert get(base + "/readyz")[0] == 200
        assert get(base + "/nope")[0] == 404
    finally:
        server.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("0.0.0.0", 9464)), ("[::1]:80", ("::1", 80))],
)
def test_parse_host_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value) == expected


@pytest.mark.parametrize("value", ["9464", "host:", "host:99999", "host:x"])
def test_parse_host_port_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_host_port(value)


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    metrics = Metrics(CollectorRegistry())
    server = MetricsServer("127.0.0.1", 0, metrics, Health(metrics), request_timeout=1.0)
    server.start()
    yield server
    server.close()


def test_500_idle_connections_neither_block_the_probes_nor_add_threads(server: MetricsServer) -> None:
    threads = threading.active_count()
    idle = [socket.create_connection(server.address) for _ in range(500)]
    try:
        for _ in range(3):
            assert get("http://{}:{}/healthz".format(*server.address)) == (200, "ok\n")
        assert server.open_connections <= MAX_CONNECTIONS
        assert threading.active_count() == threads
    finally:
        for connection in idle:
            connection.close()


def test_a_connection_that_sends_no_request_is_closed_after_the_timeout(server: MetricsServer) -> None:
    with socket.create_connection(server.address) as idle:
        idle.settimeout(10)
        assert idle.recv(1) == b""  # closed by the server, with no answer
    with socket.create_connection(server.address) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the end of its headers
        slow.settimeout(10)
        assert slow.recv(1) == b""


def test_a_request_too_long_or_not_a_get_is_refused(server: MetricsServer) -> None:
    with socket.create_connection(server.address) as client:
        client.sendall(b"GET /" + b"x" * 20_000 + b" HTTP/1.1\r\n\r\n")
        client.settimeout(10)
        assert client.recv(1) == b""
    with socket.create_connection(server.address) as client:
        client.sendall(b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        client.settimeout(10)
        assert client.recv(100).startswith(b"HTTP/1.1 405 ")
