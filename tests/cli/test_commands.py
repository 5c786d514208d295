"""The `ingestor` command end to end: run (signals, end of input), replay, show, sink selection."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import structlog
import zstandard

from ingestor.cli.commands import main
from ingestor.cli.options import convex_options
from ingestor.cli.parser import build_parser
from ingestor.errors import MissingPathError, SinkError
from ingestor.sinks.convex.config import ConvexSinkConfig, sink_config
from ingestor.sinks.convex.deployment import ConvexOptions
from ingestor.sinks.factory import SinkSpec, parse_sink, resolve_sink
from ingestor.sinks.sqlite.apply import apply_ops
from ingestor.sinks.sqlite.sink import connect
from ingestor.sources.files import expand_paths
from tests.helpers.daemon import connect_when_listening
from tests.helpers.sqlite_ops import conversation_ops

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"

EXEC_LINES = [
    b'{"type":"thread.started","thread_id":"th-9"}',
    b'{"type":"turn.started"}',
    b'{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"hi"}}',
]


def ingestor(
    *args: str, stdin: bytes = b"", cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CONVEX_")}


def events(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT method FROM events_raw ORDER BY id")]


def stored_events(db: Path) -> list[str]:
    """Like `events`, while the daemon may still be creating the store."""
    try:
        return events(db) if db.exists() else []
    except sqlite3.OperationalError:
        return []


# --- sink selection ---------------------------------------------------------------------------


def test_sink_values() -> None:
    assert parse_sink("sqlite:/x/y.db") == SinkSpec("sqlite", "/x/y.db")
    assert parse_sink("jsonl:-") == SinkSpec("jsonl", "-")
    assert parse_sink("null") == SinkSpec("null")
    assert parse_sink("convex") == SinkSpec("convex")
    for bad in ("sqlite", "sqlite:", "postgres:x", "null:x", "jsonl", ""):
        with pytest.raises(SinkError, match="expected sqlite:PATH, convex"):
            parse_sink(bad)


@pytest.mark.parametrize(
    "variable", ["CONVEX_URL", "CONVEX_DEPLOYMENT", "CONVEX_SELF_HOSTED_URL", "CONVEX_SITE_ORIGIN"]
)
def test_default_sink_is_convex_when_a_deployment_variable_is_set(variable: str) -> None:
    assert resolve_sink(None, {variable: "x"}) == (SinkSpec("convex"), None)


def test_convex_url_alone_selects_convex_and_beside_another_sink_is_refused() -> None:
    assert resolve_sink(None, {}, convex_url="http://127.0.0.1:3210") == (SinkSpec("convex"), None)
    assert resolve_sink("convex", {}, convex_url="http://x") == (SinkSpec("convex"), None)
    for other in ("sqlite:x.db", "jsonl:-", "null"):
        with pytest.raises(SinkError, match="--convex-url applies to --sink convex only"):
            resolve_sink(other, {}, convex_url="http://x")


def test_default_sink_is_the_per_user_store_with_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "data" / "codex-ingestor" / "ingestor.db"
    spec, notice = resolve_sink(None, {"CONVEX_URL": "", "HOME": "/root"})
    assert spec == SinkSpec("sqlite", str(store))
    assert notice is not None and notice.startswith(f"ingestor: storing in {store} (the embedded store")
    _, notice = resolve_sink(None, {}, reading=True)
    assert notice is not None and notice.startswith(f"ingestor: reading from {store} (")
    assert resolve_sink("null", {"CONVEX_URL": "x"}) == (SinkSpec("null"), None)


def test_default_sink_notice_on_stderr(tmp_path: Path) -> None:
    env = {**clean_env(), "XDG_DATA_HOME": str(tmp_path / "data")}
    store = tmp_path / "data" / "codex-ingestor" / "ingestor.db"
    result = ingestor("replay", "-", stdin=b"\n".join(EXEC_LINES) + b"\n", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    notice = [line for line in result.stderr.decode().splitlines() if line.startswith("ingestor:")]
    assert notice == [
        f"ingestor: storing in {store} (the embedded store: no --sink, no --convex-url, none of "
        "CONVEX_URL, CONVEX_DEPLOYMENT, CONVEX_SELF_HOSTED_URL, CONVEX_SITE_ORIGIN set)"
    ]
    assert events(store) == ["thread.started", "turn.started", "item.completed"]
    assert not (tmp_path / "ingestor.db").exists()


def test_bad_sink_value_is_a_clear_usage_error() -> None:
    result = ingestor("replay", "-", "--sink", "mysql:db")
    assert result.returncode == 2
    assert (
        b"invalid --sink 'mysql:db': expected sqlite:PATH, convex, jsonl:PATH, jsonl:- or null"
        in result.stderr
    )


# --- replay -----------------------------------------------------------------------------------


def test_missing_replay_path_is_reported_before_anything_runs(tmp_path: Path) -> None:
    result = ingestor("replay", str(tmp_path / "nope.jsonl"), "--sink", f"sqlite:{tmp_path / 'db'}")
    assert result.returncode == 2
    assert f"ingestor: no such file or directory: {tmp_path / 'nope.jsonl'}".encode() in result.stderr
    assert not (tmp_path / "db").exists()


def test_directories_expand_recursively_in_sorted_order(tmp_path: Path) -> None:
    for name in ("b/2.jsonl", "b/10.jsonl", "a.jsonl", "b/c/1.jsonl", ".hidden/x.jsonl", "b/.x.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"{}\n")
    root = str(tmp_path)
    assert expand_paths([root, "-"]) == [
        f"{root}/a.jsonl",
        f"{root}/b/10.jsonl",
        f"{root}/b/2.jsonl",
        f"{root}/b/c/1.jsonl",
        "-",
    ]
    with pytest.raises(MissingPathError):
        expand_paths([root, f"{root}/missing"])


def test_replay_of_a_directory_stores_every_file_in_order(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions" / "2026" / "11"
    for day, text in (("22", "second"), ("21", "first")):
        (sessions / day).mkdir(parents=True)
        (sessions / day / "rollout.jsonl").write_bytes(b'{"type":"note","text":"%s"}\n' % text.encode())
    out = tmp_path / "ops.jsonl"
    result = ingestor("replay", str(tmp_path / "sessions"), "--sink", f"jsonl:{out}")
    assert result.returncode == 0, result.stderr
    ops = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    payloads = [op["args"]["payload"]["text"] for op in ops if op["op"] == "appendEvent"]
    assert payloads == ["first", "second"]


def test_replay_twice_into_sqlite_stores_once(tmp_path: Path) -> None:
    source = tmp_path / "run.jsonl"
    source.write_bytes(b"\n".join(EXEC_LINES) + b"\nnot json\n")
    db = tmp_path / "store.db"
    for _ in range(2):
        result = ingestor("replay", str(source), "--sink", f"sqlite:{db}")
        assert result.returncode == 0, result.stderr
    assert events(db) == ["thread.started", "turn.started", "item.completed", "ingestor/invalidJson"]


def test_replay_reads_zstd_session_files_and_a_session_in_both_forms_is_stored_once(tmp_path: Path) -> None:
    """Codex may keep a session as `rollout-*.jsonl.zst`, and a file moves between the two forms."""
    fixture = next((FIXTURES / "codex-0.169.0/sessions/app-server-tools").glob("rollout-*.jsonl"))
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    plain = sessions / fixture.name
    plain.write_bytes(fixture.read_bytes())
    compressed = sessions / f"{fixture.name}.zst"
    # Two frames: readers must go on past the first.
    half = len(fixture.read_bytes()) // 2
    frames = [
        zstandard.ZstdCompressor().compress(part)
        for part in (plain.read_bytes()[:half], plain.read_bytes()[half:])
    ]
    compressed.write_bytes(b"".join(frames))
    db = tmp_path / "store.db"
    counts = []
    for path in (compressed, sessions):
        result = ingestor("replay", str(path), "--sink", f"sqlite:{db}")
        assert result.returncode == 0, result.stderr
        conn = sqlite3.connect(db)
        counts.append(
            [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("events_raw", "commands")]
        )
        conn.close()
    lines = len(fixture.read_bytes().splitlines())
    assert counts == [[lines, 8], [lines, 8]]  # 4 file changes, 3 MCP calls, 1 web search


# --- run --------------------------------------------------------------------------------------


def test_run_on_stdin_stops_at_end_of_input() -> None:
    result = ingestor("run", "--sink", "jsonl:-", "--conversation-id", "mine", stdin=b"\n".join(EXEC_LINES))
    assert result.returncode == 0, result.stderr
    ops = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [op["args"]["method"] for op in ops if op["op"] == "appendEvent"] == [
        "thread.started",
        "turn.started",
        "item.completed",  # the last one had no newline
    ]
    assert {op["args"]["conversationId"] for op in ops if op["op"] == "appendEvent"} == {"mine"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_reading_flushes_and_exits_zero(tmp_path: Path, signum: int) -> None:
    sock, db = tmp_path / "in.sock", tmp_path / "store.db"
    # No age limit, and the last line has no newline yet: the first two lines are written as soon as
    # the input pauses, showing they were read; the unfinished third is not a line yet, so the signal
    # leaves it out rather than store its start as an invalid line (a writer killed mid-line).
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ingestor", "run", "--unix", str(sock), "--sink", f"sqlite:{db}",
         "--batch-max-ops", "4", "--batch-max-age-ms", "600000"],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        producer = connect_when_listening(sock, daemon)
        producer.sendall(b"\n".join(EXEC_LINES))  # the producer stays connected
        while len(stored_events(db)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        assert stored_events(db) == ["thread.started", "turn.started"]
        daemon.send_signal(signum)
        status = daemon.wait(timeout=20)
        err = daemon.stderr.read().decode() if daemon.stderr else ""
        assert status == 0, err
        assert "stopped inside a line" in err
        producer.close()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert events(db) == ["thread.started", "turn.started"]
    assert not sock.exists()


# --- show (in-process: main() configures logging onto pytest's capture, which is then closed) ---


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield
    structlog.reset_defaults()


# --- show -------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> str:
    conn = connect(tmp_path / "store.db")
    apply_ops(conn, conversation_ops())
    conn.close()
    return f"sqlite:{tmp_path / 'store.db'}"


def show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["show", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_show_json_has_the_history_query_shapes(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = show(capsys, "conversation", "conv-1", "--json", "--sink", store)
    assert status == 0
    conversation = orjson.loads(out)
    assert set(conversation) == {"conversation", "turns"}
    assert conversation["conversation"]["threadId"] == "th-1"
    turn = orjson.loads(show(capsys, "turn", "turn-1", "--json", "--sink", store)[1])
    assert set(turn) == {"turn", "messages", "reasoningSections", "commands", "usageSnapshots", "rateLimits"}
    assert [m["content"] for m in turn["messages"]] == ["list files", "Two files."]
    output = orjson.loads(show(capsys, "command", "call-1", "--json", "--sink", store)[1])
    assert output == {
        "callId": "call-1",
        "chunkCount": 3,
        "stdout": "a.txt\nb.txt\n",
        "stderr": "warn \ufffd",
        "call": {"command": ["ls", "-l"], "parsedCmdJson": '{"$k":1}'},
        "aggregatedOutput": "a.txt\nb.txt\n",
    }
    listed = orjson.loads(show(capsys, "events", "conv-1", "--json", "--sink", store)[1])
    assert [e["method"] for e in listed] == ["turn/started"]
    assert listed[0]["payload"] == {"params": {"n": 1}}


def test_show_human_readable(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = show(capsys, "turn", "turn-1", "--sink", store)
    assert status == 0
    assert out.splitlines()[0] == "turn turn-1  [succeeded]  conversation conv-1"
    assert "  [2025-11-22 02:53:20.002Z] user: list files" in out
    assert "  $ ls -l" in out
    assert "    callId call-1  status completed  exitCode 0  durationMs 12.5  cwd /tmp" in out
    assert "    | b.txt" in out
    assert "  - Run ls" in out
    _, out, _ = show(capsys, "conversation", "conv-1", "--sink", store)
    assert "turn turn-1  [succeeded]  2025-11-22 02:53:20.001Z -> 2025-11-22 02:53:20.011Z (0.0s)" in out
    _, out, _ = show(capsys, "command", "call-1", "--sink", store)
    assert out == (
        "command call-1  (3 chunk(s))\ncommand: ls -l\nstdout:\n  a.txt\n  b.txt\nstderr:\n  warn \ufffd\n"
    )
    _, out, _ = show(capsys, "events", "conv-1", "--sink", store)
    assert out == '2025-11-22 02:53:20.001Z  turn/started [turn turn-1]  {"params":{"n":1}}\n'


# Terminal escape sequences an agent's command could print: OSC 52 sets the clipboard, OSC 0 the
# window title, CSI 2K erases the line, and a bare CR returns to overwrite it.
HOSTILE = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;pwned\x07\x1b[2K\rok\u202e"


def test_show_escapes_control_characters_and_json_stays_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A real recording whose first command printed the sequences above.
    recording = (REPO / "fixtures" / "codex-0.169.0" / "exec" / "command_outputs.jsonl").read_text()
    hostile = recording.replace('"about to fail\\n"', json.dumps(HOSTILE + "\n"))
    assert hostile != recording
    stream = tmp_path / "hostile.jsonl"
    stream.write_text(hostile)
    db = tmp_path / "store.db"
    assert main(["replay", str(stream), "--sink", f"sqlite:{db}"]) == 0
    [(call_id, turn_id, conversation_id)] = sqlite3.connect(db).execute(
        "SELECT c.callId, c.turnId, t.conversationId FROM commands c JOIN turns t USING (turnId) "
        "WHERE c.aggregatedOutput LIKE '%pwned%'"
    )
    capsys.readouterr()
    for what, ident in (("command", call_id), ("turn", turn_id), ("events", conversation_id)):
        status, out, _ = show(capsys, what, ident, "--sink", f"sqlite:{db}")
        assert status == 0
        assert not any(c in out for c in "\x1b\x07\r\u202e"), what
        if what != "events":  # events show payloads as JSON text, already escaped
            assert "\\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b]0;pwned\\x07\\x1b[2K\\x0dok\\u202e" in out, what
    status, out, _ = show(capsys, "command", call_id, "--sink", f"sqlite:{db}", "--json")
    assert json.loads(out)["stdout"] == HOSTILE + "\n"


@pytest.mark.parametrize("what", ["conversation", "turn", "command", "events"])
def test_show_unknown_id_exits_1(store: str, what: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = show(capsys, what, "nope", "--sink", store)
    assert status == 1
    assert out == ""
    assert "'nope'" in err and err.startswith("ingestor: no ")


def test_show_on_a_missing_store_or_unreadable_sink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = show(capsys, "turn", "t", "--sink", f"sqlite:{tmp_path / 'none.db'}")
    assert status == 1
    assert "no SQLite store at" in err
    assert not (tmp_path / "none.db").exists()
    status, _, err = show(capsys, "turn", "t", "--sink", "null")
    assert status == 2
    assert "cannot be read back" in err


def test_replay_stopped_by_a_signal_stores_what_was_read_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ingestor", "replay", "-", "--sink", f"sqlite:{db}"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert daemon.stdin is not None
    try:
        daemon.stdin.write(b"\n".join(EXEC_LINES) + b"\n")
        daemon.stdin.flush()  # stdin stays open: the replay is not finished
        deadline = time.monotonic() + 20
        while len(stored_events(db)) < len(EXEC_LINES):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 130
    finally:
        daemon.stdin.close()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert events(db) == ["thread.started", "turn.started", "item.completed"]


def test_convex_options_carry_every_delivery_flag_into_the_sink_config() -> None:
    args = build_parser().parse_args(
        ["replay", "x.jsonl", "--convex-url", "http://127.0.0.1:9", "--convex-key-file", "key",
         "--state-dir", "state", "--batch-max-ops", "7", "--batch-max-bytes", "1MiB",
         "--batch-max-age-ms", "250", "--spool-max-bytes", "2MiB", "--flush-timeout", "3",
         "--unready-after", "4"]
    )  # fmt: skip
    options = convex_options(args, delivery=True)
    assert options == ConvexOptions(
        url="http://127.0.0.1:9",
        key_file=Path("key"),
        state_dir=Path("state"),
        batch_max_ops=7,
        batch_max_bytes=1024**2,
        batch_max_age=0.25,
        spool_max_bytes=2 * 1024**2,
        flush_timeout=3.0,
        unready_after=4.0,
    )
    assert sink_config({}, options) == ConvexSinkConfig(
        state_dir=Path("state"),
        batch_max_ops=7,
        batch_max_bytes=1024**2,
        batch_max_age=0.25,
        spool_max_bytes=2 * 1024**2,
        flush_timeout=3.0,
        unready_after=4.0,
    )


def test_convex_options_not_given_take_the_sink_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    show_args = build_parser().parse_args(["show", "turn", "t1", "--convex-url", "http://127.0.0.1:9"])
    assert convex_options(show_args, delivery=False) == ConvexOptions(url="http://127.0.0.1:9")
    state = Path("/var/state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))  # platformdirs reads the process's environment
    assert sink_config(os.environ, ConvexOptions()) == ConvexSinkConfig(state_dir=state / "codex-ingestor")


def test_convex_options_out_of_range_are_a_usage_error() -> None:
    with pytest.raises(SinkError, match="convex sink: batch max ops must be between 1 and 2000"):
        sink_config({}, ConvexOptions(batch_max_ops=2001))
