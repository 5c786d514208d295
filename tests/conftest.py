"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from convex_local import ConvexLocal, convex_local_server


@pytest.fixture(scope="session")
def convex_local() -> Iterator[ConvexLocal]:
    """The local Convex stand-in (tests/convex_local.py), with admin key `convex_local.ADMIN_KEY`."""
    with convex_local_server() as server:
        yield server
