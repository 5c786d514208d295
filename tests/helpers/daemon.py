"""Helpers for the tests that run the daemon as a process and push it to its limits."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Final

import anyio

RECORDINGS: Final = Path(__file__).resolve().parents[2] / "fixtures" / "codex-0.169.0"
"""Streams recorded from the real Codex CLI 0.169.0 (fixtures/README.md)."""


def free_port() -> int:
    """A local TCP port nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unreachable_url() -> str:
    """A Convex URL whose every request is refused at once: Convex down."""
    return f"http://127.0.0.1:{free_port()}"


def connect_when_listening(sock: Path, daemon: subprocess.Popen[bytes]) -> socket.socket:
    """A connection to the daemon's Unix socket, once it listens (failing if the daemon exits)."""
    producer = socket.socket(socket.AF_UNIX)
    while producer.connect_ex(str(sock)) != 0:
        assert daemon.poll() is None, "the daemon exited before listening"
        time.sleep(0.02)
    return producer


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


RECORDED_ID_PREFIX: Final = b"01a2014c-"
"""Every id in the 0.169.0 recordings (threads, turns, items: UUIDv7) starts with their time."""


def another_session(recording: bytes, index: int) -> bytes:
    """`recording` as another session would send it: its ids are its own, so its lines are new rows."""
    assert RECORDED_ID_PREFIX in recording
    return recording.replace(RECORDED_ID_PREFIX, b"%08x-" % (0xF0000000 + index))
