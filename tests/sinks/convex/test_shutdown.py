"""SIGTERM while the spool is full and Convex is down: the daemon exits within the flush deadline,
with every line it read in the spool (ingestor.sinks.convex, ingestor.pipeline)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.convex_e2e import FIXTURES, daemon_env, ingestor_argv
from tests.helpers.daemon import connect_when_listening, unreachable_url

pytestmark = pytest.mark.e2e

RECORDING = (FIXTURES / "app-server" / "multi_turn.jsonl").read_bytes()
FLUSH_TIMEOUT = 1.0


def spooled_events(state_dir: Path) -> int:
    """appendEvent ops in the spool, read from its segment files through its index."""
    with sqlite3.connect(state_dir / "spool.sqlite3") as conn:
        rows = conn.execute("SELECT segment, offset, length FROM spool").fetchall()
    count = 0
    for segment, offset, length in rows:
        with (state_dir / f"spool.sqlite3.{segment:08d}.seg").open("rb") as data:
            data.seek(offset)
            count += data.read(length).count(b'{"op":"appendEvent"')
    return count


def test_sigterm_with_a_full_spool_and_convex_down_exits_within_the_deadline(tmp_path: Path) -> None:
    sock, state = tmp_path / "in.sock", tmp_path / "state"
    daemon = subprocess.Popen(
        ingestor_argv(
            "run", unreachable_url(), state, "--unix", str(sock), "--spool-max-bytes=4KiB",
            "--batch-max-bytes=1KiB", f"--flush-timeout={FLUSH_TIMEOUT}",
        ),
        env=daemon_env(),
        stderr=subprocess.PIPE,
    )  # fmt: skip
    producers = []
    try:
        for _ in range(3):  # several producers, each blocked with its lines read but not spooled
            producer = connect_when_listening(sock, daemon)
            producer.setblocking(False)
            producers.append(producer)
            sent = 0
            deadline = time.monotonic() + 10
            while sent < len(RECORDING) and time.monotonic() < deadline:
                try:
                    sent += producer.send(RECORDING[sent:])
                except BlockingIOError:
                    time.sleep(0.01)
        assert daemon.stderr is not None
        seen = b""
        while b"spool full" not in seen:
            seen += daemon.stderr.readline()
            assert daemon.poll() is None
        daemon.send_signal(signal.SIGTERM)
        _, rest = daemon.communicate(timeout=FLUSH_TIMEOUT + 20)
        assert daemon.returncode == 0, (seen + rest).decode()[-3000:]
    finally:
        for producer in producers:
            producer.close()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    log = (seen + rest).decode()
    read = sum(
        int(line.split('"lines":')[1].split(",")[0]) for line in log.splitlines() if '"pipeline done"' in line
    )
    assert read > 0
    assert spooled_events(state) == read  # every line read is in the spool, for the next start
