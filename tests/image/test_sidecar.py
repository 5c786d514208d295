"""The image's default command as a sidecar, end to end against the local Convex stand-in on the host.

Its Unix socket is on a mounted directory, its state directory on a mounted volume, as in
deploy/k8s-sidecar.yaml; recorded app-server streams go into the socket and must be stored exactly as
the host's own daemon stores them; SIGTERM must lose nothing; a restart on the same state volume must
deliver what was spooled while Convex was down.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.convex_e2e import app_server_conversations, dump_history, http_get, log_events, row_count
from tests.helpers.convex_local import ConvexLocal
from tests.image.built_image import default_command, needs_image, started
from tests.image.sidecar import (
    APP_SERVER_STREAMS,
    DAEMON,
    METRICS,
    Volumes,
    assert_metrics_port_free,
    host_daemon_history,
    send,
    wait_until_listening,
    wait_until_read,
    wait_until_spooled,
)

pytestmark = [needs_image, pytest.mark.e2e]


@pytest.fixture
def convex(convex_local: ConvexLocal) -> Iterator[ConvexLocal]:
    convex_local.reset()
    yield convex_local
    convex_local.reset()


def convex_env(url: str, key: str) -> dict[str, str]:
    return {"CONVEX_URL": url, "CONVEX_ADMIN_KEY": key}


def wait_for_history(
    url: str, conversations: list[str], expected: dict[str, Any], timeout: float = 60
) -> None:
    """Until Convex holds `expected` for these conversations (then the comparison shows what differs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and dump_history(url, conversations) != expected:
        time.sleep(0.2)
    assert dump_history(url, conversations) == expected


def test_the_default_command_stores_socket_streams_like_the_host_daemon_and_stops_cleanly(
    convex: ConvexLocal, tmp_path: Path
) -> None:
    assert convex.admin_key is not None
    first, second = APP_SERVER_STREAMS / "two_threads.jsonl", APP_SERVER_STREAMS / "multi_turn.jsonl"
    conversations = app_server_conversations(first.read_bytes() + second.read_bytes())
    expected = host_daemon_history(
        convex.url, convex.admin_key, tmp_path / "host", [first, second], conversations
    )
    assert len(conversations) == 3 and row_count(expected) > 50
    convex.reset()

    assert_metrics_port_free()
    volumes = Volumes.make(tmp_path / "sidecar")
    socket_path = volumes.socket_dir / "ingest.sock"
    with started(
        default_command(), volumes=volumes.mounts(), env=convex_env(convex.url, convex.admin_key)
    ) as sidecar:
        wait_until_listening(sidecar, socket_path)
        assert http_get(f"{METRICS}/readyz") == (200, "ready\n")

        # A stream delivered while the sidecar runs.
        send(socket_path, first.read_bytes())
        wait_for_history(convex.url, conversations[:2], {c: expected[c] for c in conversations[:2]})

        # A stream read but not yet delivered when SIGTERM comes (Convex answers slowly): flushed first.
        convex.faults(delayMs=1000)
        send(socket_path, second.read_bytes())
        wait_until_read(len(first.read_bytes().splitlines()) + len(second.read_bytes().splitlines()))
        wait_until_spooled()
        status, stderr = sidecar.stop(DAEMON)

    assert status == 0, stderr.decode(errors="replace")[-4000:]
    assert any(e.get("event") == "stopping: flushing what was read" for e in log_events(stderr))
    convex.faults(delayMs=0)
    assert dump_history(convex.url, conversations) == expected


def test_a_restart_on_the_same_state_volume_delivers_what_was_spooled_while_convex_was_down(
    convex: ConvexLocal, tmp_path: Path
) -> None:
    assert convex.admin_key is not None
    stream = APP_SERVER_STREAMS / "command_outputs.jsonl"
    conversations = app_server_conversations(stream.read_bytes())
    expected = host_daemon_history(convex.url, convex.admin_key, tmp_path / "host", [stream], conversations)
    assert row_count(expected) > 5
    convex.reset()

    with socket.socket() as closed:  # a port nothing listens on: Convex is down
        closed.bind(("127.0.0.1", 0))
        down_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    assert_metrics_port_free()
    volumes = Volumes.make(tmp_path / "sidecar")
    socket_path = volumes.socket_dir / "ingest.sock"
    with started(
        default_command(), volumes=volumes.mounts(), env=convex_env(down_url, convex.admin_key)
    ) as down:
        wait_until_listening(down, socket_path)
        send(socket_path, stream.read_bytes())
        wait_until_read(len(stream.read_bytes().splitlines()))
        status, stderr = down.stop(DAEMON)
    assert status == 0, stderr.decode(errors="replace")[-4000:]
    assert convex.stats()["executed"]["mutation"] == 0
    assert sorted(p.name for p in volumes.state_dir.iterdir() if p.name.startswith("spool.sqlite3")), (
        stderr.decode()
    )

    assert_metrics_port_free()
    with started(
        default_command(), volumes=volumes.mounts(), env=convex_env(convex.url, convex.admin_key)
    ) as restarted:
        wait_until_listening(restarted, socket_path)
        wait_for_history(convex.url, conversations, expected)
        status, stderr = restarted.stop(DAEMON)
    assert status == 0, stderr.decode(errors="replace")[-4000:]
    assert dump_history(convex.url, conversations) == expected
