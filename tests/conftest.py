"""Shared fixtures, and the check that a run meant for the compiled build really tests it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

import ingestor.normalize
from ingestor.metrics import Health, Metrics
from tests.helpers.convex_local import ConvexLocal, convex_local_server


def pytest_configure(config: pytest.Config) -> None:
    # scripts/test runs the normalizer's tests again with .venv-compiled (setup.py): there, a pure
    # Python module found first (e.g. the source tree on sys.path) would test the wrong code.
    if os.environ.get("INGESTOR_EXPECT_COMPILED") == "1" and ingestor.normalize.__file__.endswith(".py"):
        raise pytest.UsageError(f"expected the compiled normalizer, imported {ingestor.normalize.__file__}")


@pytest.fixture(scope="session")
def convex_local() -> Iterator[ConvexLocal]:
    """The local Convex stand-in (tests/helpers/convex_local.py), with admin key `convex_local.ADMIN_KEY`."""
    with convex_local_server() as server:
        yield server


@pytest.fixture
def metrics() -> Metrics:
    """The daemon's metrics on a registry of the test's own (the global one would carry over)."""
    return Metrics(CollectorRegistry())


@pytest.fixture
def health(metrics: Metrics) -> Health:
    return Health(metrics)
