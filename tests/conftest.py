"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from convex_local import ConvexLocal, convex_local_server
from prometheus_client import CollectorRegistry

from ingestor.metrics import Health, Metrics


@pytest.fixture(scope="session")
def convex_local() -> Iterator[ConvexLocal]:
    """The local Convex stand-in (tests/convex_local.py), with admin key `convex_local.ADMIN_KEY`."""
    with convex_local_server() as server:
        yield server


@pytest.fixture
def metrics() -> Metrics:
    """The daemon's metrics on a registry of the test's own (the global one would carry over)."""
    return Metrics(CollectorRegistry())


@pytest.fixture
def health(metrics: Metrics) -> Health:
    return Health(metrics)
