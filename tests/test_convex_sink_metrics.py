"""`--metrics`: Prometheus text, liveness and readiness over HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from ingestor.metrics import Health, Metrics, MetricsServer, parse_host_port


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
