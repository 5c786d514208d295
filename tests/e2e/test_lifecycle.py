"""The daemon's life, run as a user runs it: restarts in the middle of a command's output, SIGTERM
and SIGKILL under load, in both stores (docs/operations.md, "Across processes and channels")."""

from __future__ import annotations

import base64
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.sinks.sqlite.apply import apply_ops
from ingestor.sinks.sqlite.sink import connect
from tests.golden.store import FIXTURES, exec_run_streams
from tests.helpers.convex_e2e import daemon_env, dump_history, ingestor_argv, log_events, row_count
from tests.helpers.convex_local import ConvexLocal

INGESTOR = [sys.executable, "-m", "ingestor"]
LARGE = FIXTURES / "codex-0.63.0/app-server/large_output.jsonl"
"""One command (`seq 1 200000`) whose 1.2 MB of output arrives in 211 deltas, each twice (Codex 0.63
streamed it as v2 text and as legacy bytes)."""
TABLES = ("conversations", "turns", "commands", "command_chunks", "messages", "usage_snapshots", "events_raw")


def _delta_lines(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if b"exec_command_output_delta" in line]


def _ids(db: Path) -> dict[str, set[str]]:
    """Each table's row identities (keys, natural ids): what "the same facts" means across runs."""
    with sqlite3.connect(db) as conn:
        out = {}
        for table, column in (
            ("conversations", "conversationId"),
            ("turns", "turnId"),
            ("commands", "callId"),
        ):
            out[table] = {row[0] for row in conn.execute(f"SELECT {column} FROM {table}")}
        for table in ("command_chunks", "messages", "usage_snapshots", "events_raw"):
            out[table] = {row[0] for row in conn.execute(f"SELECT key FROM {table}")}
        return out


def _output(db: Path, call_id: str) -> tuple[bytes, list[int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT seq, chunkBase64 FROM command_chunks WHERE callId = ? ORDER BY seq", (call_id,)
        )
        chunks = rows.fetchall()
    return b"".join(base64.b64decode(c) for _, c in chunks), [seq for seq, _ in chunks]


def _replay(db: Path, path: Path) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [*INGESTOR, "replay", str(path), "--sink", f"sqlite:{db}"], capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return result


@pytest.mark.parametrize("cut", ["first delta", "middle", "last delta"])
def test_a_restart_in_the_middle_of_a_commands_output_loses_nothing(tmp_path: Path, cut: str) -> None:
    lines = LARGE.read_bytes().splitlines(keepends=True)
    deltas = _delta_lines(lines)
    at = {"first delta": deltas[0] + 1, "middle": deltas[len(deltas) // 2], "last delta": deltas[-1]}[cut]
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"".join(lines[:at]))
    second.write_bytes(b"".join(lines[at:]))
    split_db, whole_db = tmp_path / "split.db", tmp_path / "whole.db"
    _replay(split_db, first)
    _replay(split_db, second)
    _replay(whole_db, LARGE)
    assert _ids(split_db) == _ids(whole_db)
    (call_id,) = _ids(whole_db)["commands"]
    output, seqs = _output(split_db, call_id)
    assert output == _output(whole_db, call_id)[0]
    assert len(output) > 1_000_000  # seq 1 200000, whole
    assert seqs == list(range(len(seqs)))
    # A replay of either piece, or of the whole, adds nothing.
    before = _ids(split_db)
    for path in (second, first, LARGE):
        _replay(split_db, path)
    assert _ids(split_db) == before


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A long app-server stream shaped from the real recordings (the benchmark workload)."""
    path = tmp_path_factory.mktemp("load") / "codex-150k.jsonl"
    subprocess.run(
        [sys.executable, "-m", "bench.gen", "--profile", "codex", "--events", "150000", "--out", str(path)],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return path


def _one_process_ids(lines: list[bytes], tmp_path: Path) -> dict[str, set[str]]:
    normalizer = Normalizer("stdin")
    ops = []
    for i, data in enumerate(lines):
        ops += normalizer.feed(Line("stdin", i, 0, data))
    ops += normalizer.finish()
    db = tmp_path / "expected.db"
    conn = connect(db)
    apply_ops(conn, ops)
    conn.close()
    return _ids(db)


def _wait_for_rows(db: Path, daemon: subprocess.Popen[bytes]) -> None:
    """Until the daemon has stored something: it is running, past its start-up."""
    deadline = time.monotonic() + 30
    while True:
        assert daemon.poll() is None and time.monotonic() < deadline
        try:
            with sqlite3.connect(db) as conn:
                if conn.execute("SELECT count(*) FROM events_raw").fetchone()[0]:
                    return
        except sqlite3.OperationalError:
            pass  # not created yet
        time.sleep(0.02)


def _feed(daemon: subprocess.Popen[bytes], data: bytes) -> threading.Thread:
    def write() -> None:
        assert daemon.stdin is not None
        try:
            for start in range(0, len(data), 1 << 16):
                daemon.stdin.write(data[start : start + (1 << 16)])
        except (BrokenPipeError, ValueError):
            pass  # the daemon stopped reading

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _busy_daemon(db: Path, data: bytes, after: float) -> tuple[subprocess.Popen[bytes], threading.Thread]:
    """`ingestor run` into `db`, `data` piped in as fast as it reads, `after` seconds into storing."""
    daemon = subprocess.Popen(
        [*INGESTOR, "run", "--sink", f"sqlite:{db}"], stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    feeder = _feed(daemon, data)
    _wait_for_rows(db, daemon)
    time.sleep(after)
    return daemon, feeder


@pytest.mark.parametrize("after", [0.0, 0.8])
def test_sigterm_under_load_stores_exactly_the_lines_it_read(
    load: Path, tmp_path: Path, after: float
) -> None:
    db = tmp_path / "store.db"
    data = load.read_bytes()
    daemon, feeder = _busy_daemon(db, data, after)
    daemon.send_signal(signal.SIGTERM)
    # Not communicate(): it would close the daemon's input, and an end of input racing the signal
    # makes the unfinished last line a line (as it should be at an end of input).
    daemon.wait(timeout=60)
    assert daemon.stderr is not None
    err = daemon.stderr.read()
    feeder.join(timeout=10)
    assert daemon.returncode == 0, err.decode()[-3000:]
    (summary,) = [e for e in log_events(err) if e.get("event") == "pipeline done"]
    read = summary["lines"]
    lines = data.splitlines()
    assert 0 < read < len(lines)  # stopped in the middle
    assert _ids(db) == _one_process_ids(lines[:read], tmp_path)  # each line read is stored, no other


@pytest.mark.parametrize("after", [0.0, 0.8])
def test_sigkill_under_load_then_a_replay_gives_the_one_process_store(
    load: Path, tmp_path: Path, after: float
) -> None:
    db = tmp_path / "store.db"
    data = load.read_bytes()
    daemon, _ = _busy_daemon(db, data, after)
    daemon.kill()
    daemon.communicate(timeout=10)
    stored = _ids(db)
    expected = _one_process_ids(data.splitlines(), tmp_path)
    assert 0 < len(stored["events_raw"]) < len(expected["events_raw"])  # killed in the middle
    assert all(stored[t] <= expected[t] for t in stored)  # nothing that is not a fact of the stream
    _replay(db, load)  # the same stream again, from the start
    assert _ids(db) == expected


def test_convex_a_stream_cut_in_two_runs_is_the_one_run_history(
    convex_local: ConvexLocal, tmp_path: Path
) -> None:
    lines = LARGE.read_bytes().splitlines(keepends=True)
    deltas = _delta_lines(lines)
    at = deltas[len(deltas) // 2]
    env = daemon_env(CONVEX_ADMIN_KEY=convex_local.admin_key)
    (conversation,) = {
        orjson.loads(line)["params"]["thread"]["id"]
        for line in lines
        if line.startswith(b'{"method":"thread/started"')
    }

    def run(data: bytes, state: Path) -> None:
        result = subprocess.run(
            ingestor_argv("run", convex_local.url, state),
            input=data,
            capture_output=True,
            env=env,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()[-3000:]

    convex_local.reset()
    run(b"".join(lines), tmp_path / "whole")
    whole = dump_history(convex_local.url, [conversation], convex_local.admin_key)
    convex_local.reset()
    run(b"".join(lines[:at]), tmp_path / "first")
    run(b"".join(lines[at:]), tmp_path / "second")
    split = dump_history(convex_local.url, [conversation], convex_local.admin_key)
    assert row_count(split) > 20
    assert split == whole
    outputs = split[conversation]["commandOutputs"]
    assert len(next(iter(outputs.values()))["stdout"]) > 1_000_000


def _fact_rows(dump: dict[str, object]) -> dict[str, int]:
    """Rows per fact table in a history dump (raw events apart: every channel's lines are kept)."""
    counts = {
        "turns": 0,
        "messages": 0,
        "reasoningSections": 0,
        "commands": 0,
        "usageSnapshots": 0,
        "rateLimits": 0,
    }
    for conversation in dump.values():
        assert isinstance(conversation, dict)
        for turn in conversation["turns"].values():
            counts["turns"] += 1
            for table in counts.keys() - {"turns"}:
                counts[table] += len(turn[table])
    return counts


def test_convex_a_thread_through_app_server_and_its_session_file_is_stored_once(
    convex_local: ConvexLocal, tmp_path: Path
) -> None:
    """The live stream filed under a chat (hello line), then the session file Codex wrote, then the
    live stream again: one conversation, no more rows than the richest channel."""
    live = FIXTURES / "codex-0.169.0/app-server/command_outputs.jsonl"
    (session,) = (FIXTURES / "codex-0.169.0/sessions/app-server-command_outputs").glob("*.jsonl")
    hello = b'{"type": "ingestor.hello", "conversationId": "chat-7"}\n'
    env = daemon_env(CONVEX_ADMIN_KEY=convex_local.admin_key)

    def run(data: bytes, state: str) -> None:
        argv = ingestor_argv("run", convex_local.url, tmp_path / state)
        result = subprocess.run(argv, input=data, capture_output=True, env=env, check=False)
        assert result.returncode == 0, result.stderr.decode()[-3000:]

    thread = orjson.loads(session.read_bytes().splitlines()[0])["payload"]["id"]
    alone = {}
    for name, data in (("live", live.read_bytes()), ("file", session.read_bytes())):
        convex_local.reset()
        run(data, name)
        alone[name] = _fact_rows(dump_history(convex_local.url, [thread], convex_local.admin_key))
    richest = {table: max(alone["live"][table], alone["file"][table]) for table in alone["live"]}
    convex_local.reset()
    run(hello + live.read_bytes(), "a")
    run(session.read_bytes(), "b")
    run(live.read_bytes(), "c")
    together = dump_history(convex_local.url, ["chat-7", thread], convex_local.admin_key)
    assert together[thread]["conversation"] is None  # the session file joined the chat's conversation
    rows = _fact_rows(together)
    assert all(count > 0 for count in richest.values())
    assert all(rows[table] <= richest[table] for table in rows), (rows, richest)
    # Facts with ids or content keys merge whole; rate limits are the first channel's (live's).
    assert {t: rows[t] for t in rows if t != "rateLimits"} == {
        t: richest[t] for t in rows if t != "rateLimits"
    }
    assert rows["rateLimits"] == alone["live"]["rateLimits"]


RESUMED = FIXTURES / "codex-0.169.0/exec/resumed_run.jsonl"
"""`codex exec --json` (run 1) then `codex exec --json resume <thread id>` (run 2), and below the
session file both runs appended to."""


def _exec_thread() -> tuple[bytes, bytes, bytes, str]:
    first, second = exec_run_streams(RESUMED)
    (session,) = (FIXTURES / "codex-0.169.0/sessions/exec-resumed_run").glob("*.jsonl")
    thread = orjson.loads(first.splitlines()[0])["thread_id"]
    return first, second, session.read_bytes(), thread


def test_exec_runs_piped_into_their_own_daemons_and_the_session_file_are_one_thread(tmp_path: Path) -> None:
    """As a user runs it: each `codex exec` piped into its own `ingestor run`, the first run's saved
    stream again, then `ingestor replay` of the session file: two turns in order, each fact once."""
    first, second, session, thread = _exec_thread()
    db = tmp_path / "store.db"
    for data in (first, second, first):
        result = subprocess.run(
            [*INGESTOR, "run", "--sink", f"sqlite:{db}"], input=data, capture_output=True, check=False
        )
        assert result.returncode == 0, result.stderr.decode()[-3000:]
    with sqlite3.connect(db) as conn:
        turns = conn.execute("SELECT turnId, turnNumber FROM turns ORDER BY turnNumber").fetchall()
        assert turns == [(f"{thread}/turn-1", 1), (f"{thread}/turn-2", 2)]
        said = conn.execute("SELECT turnId, content FROM messages ORDER BY turnId").fetchall()
        assert said == [
            (f"{thread}/turn-1", "The first run printed its marker."),
            (f"{thread}/turn-2", "The resumed run printed its marker."),
        ]
    session_file = tmp_path / "rollout.jsonl"
    session_file.write_bytes(session)
    _replay(db, session_file)
    alone = tmp_path / "session-alone.db"
    _replay(alone, session_file)
    with sqlite3.connect(db) as both, sqlite3.connect(alone) as only:
        for table in (
            "conversations",
            "turns",
            "commands",
            "messages",
            "reasoning_sections",
            "usage_snapshots",
        ):
            count = f"SELECT count(*) FROM {table}"
            assert both.execute(count).fetchone() == only.execute(count).fetchone(), table
        # The session file's prompts joined the runs' turns (exec never tells them).
        users = both.execute(
            "SELECT turnId, content FROM messages WHERE role = 'user' ORDER BY turnId"
        ).fetchall()
        assert users == [(f"{thread}/turn-1", "Start the work."), (f"{thread}/turn-2", "Continue the work.")]


def test_convex_exec_runs_and_their_session_file_are_one_thread(
    convex_local: ConvexLocal, tmp_path: Path
) -> None:
    """The same through the Convex stand-in: the history equals the session file's alone, whichever
    channel came first; the runs piped alone make the thread's two turns in order."""
    first, second, session, thread = _exec_thread()
    env = daemon_env(CONVEX_ADMIN_KEY=convex_local.admin_key)

    def run(data: bytes, state: str) -> None:
        argv = ingestor_argv("run", convex_local.url, tmp_path / state)
        result = subprocess.run(argv, input=data, capture_output=True, env=env, check=False)
        assert result.returncode == 0, result.stderr.decode()[-3000:]

    convex_local.reset()
    run(session, "alone")
    alone = _fact_rows(dump_history(convex_local.url, [thread], convex_local.admin_key))
    assert alone["turns"] == 2
    for order in ((first, second, session, first), (session, first, second)):
        convex_local.reset()
        for n, data in enumerate(order):
            run(data, f"{len(order)}-{n}")
        together = dump_history(convex_local.url, [thread], convex_local.admin_key)
        assert _fact_rows(together) == alone
    convex_local.reset()
    run(first, "first")
    run(second, "second")
    turns = dump_history(convex_local.url, [thread], convex_local.admin_key)[thread]["turns"]
    assert [(t, turn["turn"]["turnNumber"]) for t, turn in turns.items()] == [
        (f"{thread}/turn-1", 1),
        (f"{thread}/turn-2", 2),
    ]
