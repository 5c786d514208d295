"""Another process holding the SQLite store beyond the busy timeout pauses the daemon; it does not end
it, and nothing read is lost (ingestor.sinks.sqlite)."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.daemon import RECORDINGS, another_session, connect_when_listening

RECORDING = (RECORDINGS / "exec" / "multi_turn.jsonl").read_bytes()
BUSY_TIMEOUT = 5.0  # ingestor.sinks.sqlite.sink.connect


def events(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM events_raw").fetchone()[0])


def test_a_store_locked_past_the_busy_timeout_pauses_input_and_loses_nothing(tmp_path: Path) -> None:
    sock, db = tmp_path / "in.sock", tmp_path / "store.db"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ingestor", "run", "--unix", str(sock), "--sink", f"sqlite:{db}"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with connect_when_listening(sock, daemon) as first:
            first.sendall(RECORDING)
        lines = len(set(RECORDING.splitlines()))  # a line repeated in a thread is one event
        while events(db) < lines:  # the store exists and holds the first producer's lines
            assert daemon.poll() is None
            time.sleep(0.05)

        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holding the store: a backup, a migration
        with socket.socket(socket.AF_UNIX) as second:
            second.connect(str(sock))
            second.sendall(another_session(RECORDING, 1))
        time.sleep(BUSY_TIMEOUT + 2)
        assert daemon.poll() is None, "the daemon died on a locked store"
        other.execute("COMMIT")
        other.close()

        while events(db) < 2 * lines:
            assert daemon.poll() is None
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err.decode()[-3000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    log = err.decode()
    assert log.count("store locked by another process") == 1
    assert "store writable again" in log
    assert events(db) == 2 * lines
