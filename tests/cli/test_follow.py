"""`ingestor run --follow` as a user runs it, against session files written as Codex writes them.

A real recording is written back line by line at (a faster copy of) its recorded pace, every line in
two writes with a pause between (a torn write), while the daemon is SIGKILLed and started again twice.
Once the file went quiet, the store must be the one a one-shot `ingestor replay` of the finished file
makes: nothing lost, nothing twice, the same turns, commands and keys.
"""

from __future__ import annotations

import itertools
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

from tests.golden.store import FIXTURES, TABLES, table_rows

INGESTOR: Final = [sys.executable, "-m", "ingestor"]
SESSIONS: Final = sorted(
    p
    for p in FIXTURES.glob("codex-*/sessions/*/rollout-*.jsonl")
    if p.parent.name in ("app-server-multi_turn", "exec-command_outputs", "app-server-tools")
)
PACE: Final = 0.05
"""The recording's own gaps, this much of them (at most MAX_GAP): a few seconds a session."""
MAX_GAP: Final = 0.05
ARRIVAL_COLUMNS: Final = frozenset({"receivedAt"})
"""When the daemon read a line: the only columns a live capture may differ in from a replay."""


def store(db: Path) -> dict[str, list[dict[str, Any]]]:
    conn = sqlite3.connect(db)
    try:
        return {
            table: [
                {k: v for k, v in row.items() if k not in ARRIVAL_COLUMNS} for row in table_rows(conn, table)
            ]
            for table in TABLES
        }
    finally:
        conn.close()


def as_sets(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    """Rows in a canonical order (a live capture writes in other batches, so other insertion order)."""
    return {
        table: sorted(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) for row in rs)
        for table, rs in rows.items()
    }


def replay_store(path: Path, db: Path) -> dict[str, list[bytes]]:
    subprocess.run(
        [*INGESTOR, "replay", str(path), "--sink", f"sqlite:{db}"], check=True, capture_output=True
    )
    return as_sets(store(db))


def recorded_gaps(lines: list[bytes]) -> list[float]:
    times = []
    for line in lines:
        stamp = orjson.loads(line).get("timestamp")
        times.append(time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + float(stamp[19:-1] or 0))
    return [0.0] + [min(MAX_GAP, max(0.0, b - a) * PACE) for a, b in itertools.pairwise(times)]


def write_back(lines: list[bytes], target: Path, seed: int, paused: threading.Event) -> None:
    """Codex writing its session file: each line in two writes (torn), at the recorded pace. Halfway,
    inside a line, it waits while `paused` is set (the daemon is killed then)."""
    rng = random.Random(seed)
    gaps = recorded_gaps(lines)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("ab", buffering=0) as out:
        for i, (gap, line) in enumerate(zip(gaps, lines, strict=True)):
            time.sleep(gap)
            cut = rng.randrange(1, len(line) + 1)
            out.write(line[:cut])
            time.sleep(rng.choice((0, 0.002, 0.02)))
            while i == len(lines) // 2 and paused.is_set():
                time.sleep(0.01)
            out.write(line[cut:] + b"\n")


def daemon(sessions: Path, db: Path, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *INGESTOR, "run", "--follow", str(sessions), "--sink", f"sqlite:{db}", "--state-dir", str(state),
            "--follow-idle", "1", "--follow-poll", "0.5", "--log-level", "warning",
        ],
        stderr=subprocess.PIPE,
    )  # fmt: skip


def checkpoint(state: Path, path: Path) -> tuple[int, int] | None:
    """(finished, offset) of `path` in the daemon's checkpoints, if it has one."""
    db = state / "checkpoints.db"
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        try:
            found = conn.execute('SELECT finished, "offset" FROM checkpoints WHERE path = ?', (str(path),))
            row = found.fetchone()
        except sqlite3.OperationalError:
            return None  # the daemon is creating the table
    return None if row is None else (row[0], row[1])


def finished(state: Path, path: Path) -> bool:
    return checkpoint(state, path) == (1, path.stat().st_size)


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "recording", SESSIONS, ids=[p.relative_to(FIXTURES).parent.as_posix() for p in SESSIONS]
)
def test_a_session_written_live_through_two_sigkills_is_stored_as_a_replay_stores_it(
    recording: Path, tmp_path: Path
) -> None:
    lines = recording.read_bytes().splitlines()
    sessions, db, state = tmp_path / "sessions", tmp_path / "live.db", tmp_path / "state"
    target = sessions / "2026" / "12" / "05" / recording.name  # a date directory the daemon has not seen
    sessions.mkdir()
    paused = threading.Event()
    paused.set()
    writer = threading.Thread(target=write_back, args=(lines, target, len(lines), paused))
    total = len(lines) + sum(map(len, lines))
    stored_at_kill = []
    running = daemon(sessions, db, state)
    try:
        writer.start()
        for share in (3, 3 / 2):  # kill it once a third, then two thirds of the session are stored
            wait_for(lambda s=share: (checkpoint(state, target) or (0, 0))[1] * s >= total)
            running.send_signal(signal.SIGKILL)
            running.wait()
            stored_at_kill.append((checkpoint(state, target) or (0, 0))[1])
            running = daemon(sessions, db, state)
            paused.clear()  # the second half is written while the daemon starts again
        writer.join()
        wait_for(lambda: finished(state, target))
        running.send_signal(signal.SIGTERM)
        _, err = running.communicate(timeout=30)
        assert running.returncode == 0, err.decode()
    finally:
        paused.clear()
        if running.poll() is None:
            running.kill()
        writer.join()
    assert 0 < stored_at_kill[0] < total, "the first kill must come in the middle of the session"
    assert target.read_bytes() == b"\n".join(lines) + b"\n"
    assert as_sets(store(db)) == replay_store(target, tmp_path / "replay.db")


def test_a_restart_over_finished_files_reads_none_and_writes_nothing(tmp_path: Path) -> None:
    sessions, db, state = tmp_path / "sessions", tmp_path / "live.db", tmp_path / "state"
    day = sessions / "2026" / "12" / "05"
    day.mkdir(parents=True)
    for recording in SESSIONS:
        (day / recording.name).write_bytes(recording.read_bytes())
    first = daemon(sessions, db, state)
    wait_for(lambda: all(finished(state, day / r.name) for r in SESSIONS))
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    before = as_sets(store(db))
    second = subprocess.Popen(
        [*INGESTOR, "run", "--follow", str(sessions), "--sink", f"sqlite:{db}", "--state-dir", str(state),
         "--follow-poll", "0.5", "--log-level", "debug"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert second.stderr is not None
    log = b""
    while b"sources ready" not in log:  # it has looked at every file (however slow its start)
        line = second.stderr.readline()
        assert line, "the daemon ended before it was ready"
        log += line
    time.sleep(2)  # and a few rescans
    second.send_signal(signal.SIGTERM)
    rest, _ = second.communicate(timeout=30)[1], None
    done = next(orjson.loads(line) for line in (log + rest).splitlines() if b'"pipeline done"' in line)
    assert (done["streams_opened"], done["bytes_read"], done["ops_written"]) == (0, 0, 0)
    assert as_sets(store(db)) == before


def replay_run(paths: list[Path], db: Path, state: Path) -> dict[str, Any]:
    """`ingestor replay --state-dir`, and its summary log line."""
    done = subprocess.run(
        [*INGESTOR, "replay", *map(str, paths), "--sink", f"sqlite:{db}", "--state-dir", str(state)],
        capture_output=True,
        check=True,
    )
    summary: dict[str, Any] = next(
        orjson.loads(line)
        for line in done.stdout.splitlines() + done.stderr.splitlines()
        if b"pipeline done" in line
    )
    return summary


def test_replay_with_a_state_dir_reads_only_what_is_new(tmp_path: Path) -> None:
    archive, db, state = tmp_path / "archive", tmp_path / "live.db", tmp_path / "state"
    archive.mkdir()
    growing = archive / SESSIONS[0].name
    lines = SESSIONS[0].read_bytes().splitlines(keepends=True)
    growing.write_bytes(b"".join(lines[:10]))
    for recording in SESSIONS[1:]:
        (archive / recording.name).write_bytes(recording.read_bytes())
    first = replay_run([archive], db, state)
    assert first["streams_opened"] == len(SESSIONS)
    reference = tmp_path / "replay.db"
    replay_store(archive, reference)  # a one-shot replay of the same days, in the same order
    again = replay_run([archive], db, state)
    assert (again["streams_opened"], again["bytes_read"], again["ops_written"]) == (0, 0, 0)
    growing.write_bytes(b"".join(lines))  # the day's new lines
    third = replay_run([archive], db, state)
    assert third["streams_opened"] == 1
    replay_store(growing, reference)
    assert as_sets(store(db)) == as_sets(store(reference))
