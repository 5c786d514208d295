"""One-shot runs are honest about what they could not deliver (ingestor.cli.commands): `replay` and a
stdin-only `run` exit non-zero while operations wait in the spool, saying how many and where, and a
later run on the same state directory delivers them."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from ingestor.cli.commands import EXIT_FAILURE, EXIT_UNDELIVERED
from tests.helpers.convex_e2e import FIXTURES, call, daemon_env, ingestor_argv
from tests.helpers.convex_local import ConvexLocal
from tests.helpers.daemon import connect_when_listening, unreachable_url

pytestmark = pytest.mark.e2e

RECORDING = FIXTURES / "exec" / "multi_turn.jsonl"
THREAD = "01a2014c-efee-7c40-8c50-847b0a5ef8a2"  # the recording's thread id
SHORT_FLUSH = "--flush-timeout=1"


@pytest.fixture
def convex(convex_local: ConvexLocal) -> ConvexLocal:
    convex_local.reset()
    return convex_local


def ingestor(
    command: str, url: str, state_dir: Path, *extra: str, stdin: bytes = b"", key: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = daemon_env(**({"CONVEX_ADMIN_KEY": key} if key else {}))
    return subprocess.run(
        ingestor_argv(command, url, state_dir, *extra), input=stdin, capture_output=True, env=env, timeout=120
    )


def spooled_ops(state_dir: Path) -> int:
    with sqlite3.connect(state_dir / "spool.sqlite3") as conn:
        return int(conn.execute("SELECT coalesce(sum(ops), 0) FROM spool").fetchone()[0])


def stored_events(convex: ConvexLocal) -> int:
    args = {"conversationId": THREAD, "paginationOpts": {"numItems": 1000, "cursor": None}}
    page = call(convex.url, "query", "history:listEvents", args, convex.admin_key)
    assert page["isDone"]
    return len(page["page"])


def last_line(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode().strip().splitlines()[-1]


@pytest.mark.parametrize("command", ["replay", "run"])
def test_convex_unreachable_exits_75_and_a_later_run_delivers(
    convex: ConvexLocal, tmp_path: Path, command: str
) -> None:
    state = tmp_path / "state"
    args = [str(RECORDING)] if command == "replay" else []
    stdin = b"" if command == "replay" else RECORDING.read_bytes()

    down = ingestor(command, unreachable_url(), state, *args, SHORT_FLUSH, stdin=stdin)
    assert down.returncode == EXIT_UNDELIVERED, down.stderr.decode()[-3000:]
    waiting = spooled_ops(state)
    assert waiting > len(RECORDING.read_bytes().splitlines())  # every line's event, and its facts
    assert f"{waiting} operations wait in the spool in {state}" in last_line(down)

    up = ingestor("run", convex.url, state, key=convex.admin_key)  # nothing new: the spool only
    assert up.returncode == 0, up.stderr.decode()[-3000:]
    assert spooled_ops(state) == 0
    assert stored_events(convex) == len(set(RECORDING.read_bytes().splitlines()))  # repeats: one event


def test_a_wrong_key_exits_1_and_keeps_everything_for_the_right_one(
    convex: ConvexLocal, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    refused = ingestor("replay", convex.url, state, str(RECORDING), SHORT_FLUSH, key="not-the-key-0123456789")
    assert refused.returncode == EXIT_FAILURE, refused.stderr.decode()[-3000:]
    waiting = spooled_ops(state)
    assert waiting > 0
    assert last_line(refused).startswith("ingestor: convex refused the requests (auth")
    assert f"{waiting} operations wait in the spool in {state}" in last_line(refused)

    accepted = ingestor("run", convex.url, state, key=convex.admin_key)
    assert accepted.returncode == 0, accepted.stderr.decode()[-3000:]
    assert stored_events(convex) == len(set(RECORDING.read_bytes().splitlines()))  # repeats: one event


def test_a_listening_daemon_stopped_with_a_backlog_still_exits_0(tmp_path: Path) -> None:
    """The sidecar's contract: SIGTERM flushes what it can; the spool is its next start's work."""
    sock = tmp_path / "in.sock"
    daemon = subprocess.Popen(
        ingestor_argv("run", unreachable_url(), tmp_path / "state", "--unix", str(sock), SHORT_FLUSH),
        env=daemon_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        with connect_when_listening(sock, daemon) as producer:
            producer.sendall(RECORDING.read_bytes())
        while not (tmp_path / "state" / "spool.sqlite3").exists() or spooled_ops(tmp_path / "state") == 0:
            assert daemon.poll() is None
            time.sleep(0.02)
        daemon.terminate()
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
