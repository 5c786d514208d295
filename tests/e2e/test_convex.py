"""End to end: the real Codex CLI (offline) -> `ingestor run --sink convex` -> the local Convex stand-in.

1. `codex exec --json | ingestor run` through a real pipe; the state is read back with `history:*`
   (and `ingestor show`), and feeding the same stream again changes nothing.
2. A `codex app-server` session whose stdout reaches `ingestor run --unix SOCK` over a Unix socket,
   as in the Kubernetes sidecar example, stopped with SIGTERM.
3. A refused key: not ready, nothing lost; the next start with the right key delivers the spool.
4. `ingestor replay` of Codex's session files, twice: each fact stored once.
5. A 12 MiB line (ops far over one call's limit): staged in parts, stored whole, read back equal;
   also when the daemon is killed mid-staging and restarted, with responses of staging calls lost.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.convex_e2e import (
    CODEX_JS,
    INGESTOR,
    REPO,
    app_server_conversations,
    call,
    daemon_env,
    daemon_process,
    dump_history,
    http_get,
    ingestor_argv,
    kill_after_mutations,
    log_events,
    needs_codex,
    row_count,
    run_ingestor,
)
from tests.helpers.convex_local import ConvexLocal

pytestmark = pytest.mark.e2e


@pytest.fixture
def convex(convex_local: ConvexLocal) -> ConvexLocal:
    convex_local.reset()
    return convex_local


@pytest.fixture
def env(convex: ConvexLocal) -> dict[str, str]:
    assert convex.admin_key is not None
    return daemon_env(CONVEX_ADMIN_KEY=convex.admin_key)


@pytest.fixture
def codex_home(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    home, cwd = tmp_path / "codex-home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    yield home, cwd


def codex_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home), "LANG": "C.UTF-8"}


@needs_codex
def test_codex_exec_piped_into_the_daemon(
    convex: ConvexLocal, env: dict[str, str], codex_home: tuple[Path, Path], tmp_path: Path
) -> None:
    from testing.codex.model_server import Message, ModelServer, Reasoning, Shell, Step, codex_config_toml

    home, cwd = codex_home
    captured = tmp_path / "exec.jsonl"
    state = tmp_path / "state"
    script = [
        Step([Reasoning("Plan the greeting"), Shell("printf 'hello\\n'; printf 'oops\\n' >&2; exit 3")]),
        Step([Message("The command failed with 3.")]),
    ]
    with ModelServer(script, name="e2e-exec") as model:
        (home / "config.toml").write_text(codex_config_toml(model.base_url))
        # A real shell pipeline, as a user would type it (tee keeps the stream for the replay below).
        pipeline = (
            f"{json.dumps(str(CODEX_JS))} exec --json --skip-git-repo-check -C {json.dumps(str(cwd))} "
            f"'greet' < /dev/null | tee {json.dumps(str(captured))} | "
            + " ".join(
                json.dumps(a) for a in ingestor_argv("run", convex.url, state, "--conversation-id=e2e-exec")
            )
        )
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", "PATH=$CODEX_PATH " + pipeline],
            env={**env, **{"CODEX_HOME": str(home), "HOME": str(home)}, "CODEX_PATH": os.environ["PATH"]},
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
        assert model.remaining == 0 and not model.errors

    conversation = call(convex.url, "query", "history:getConversation", {"conversationId": "e2e-exec"})
    assert conversation is not None
    [turn] = conversation["turns"]
    assert turn["status"] == "succeeded"
    detail = call(convex.url, "query", "history:getTurn", {"turnId": turn["turnId"]})
    assert [m["content"] for m in detail["messages"] if m["role"] == "assistant"] == [
        "The command failed with 3."
    ]
    assert [s["summaryText"] for s in detail["reasoningSections"]] == [["Plan the greeting"]]
    [command] = detail["commands"]
    assert command["exitCode"] == 3 and command["status"] == "failed"
    assert "hello" in command["aggregatedOutput"] and "oops" in command["aggregatedOutput"]
    assert detail["usageSnapshots"], "turn.completed usage is stored"

    shown = subprocess.run(
        [
            *INGESTOR,
            "show",
            "--sink=convex",
            f"--convex-url={convex.url}",
            "conversation",
            "e2e-exec",
            "--json",
        ],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr.decode(errors="replace")
    assert json.loads(shown.stdout)["conversation"]["conversationId"] == "e2e-exec"

    before = dump_history(convex.url, ["e2e-exec"])
    assert row_count(before) > 5
    again = run_ingestor(convex.url, state, captured.read_bytes(), "--conversation-id=e2e-exec", env=env)
    assert dump_history(convex.url, ["e2e-exec"]) == before, "the same stream again adds nothing"
    assert not (state / "dead-letter.jsonl").exists()
    assert str(convex.admin_key) not in again.stderr.decode()


def _forward(lines: list[bytes], sock_path: Path, stop: threading.Event) -> None:
    """The worker's side of the sidecar: each app-server stdout line, as it comes, into the socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        # The socket file appears at bind(), a moment before listen(): retry a refused connect.
        deadline = time.monotonic() + 10
        while True:
            try:
                conn.connect(str(sock_path))
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        sent = 0
        while not (stop.is_set() and sent == len(lines)):
            while sent < len(lines):
                conn.sendall(lines[sent])
                sent += 1
            time.sleep(0.01)


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "daemon exited"
        assert time.monotonic() < deadline, "the daemon never listened"
        time.sleep(0.05)


@needs_codex
def test_app_server_stdout_reaches_the_daemon_over_a_unix_socket(
    convex: ConvexLocal, env: dict[str, str], codex_home: tuple[Path, Path], tmp_path: Path
) -> None:
    from testing.codex.model_server import Message, ModelServer, Reasoning, Shell, Step, codex_config_toml
    from testing.codex.record import SANDBOX, AppServer, Run, Scenario

    home, cwd = codex_home
    sock = tmp_path / "ingest.sock"
    daemon = subprocess.Popen(
        ingestor_argv("run", convex.url, tmp_path / "state", f"--unix={sock}"),
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_socket(sock, daemon)
        with ModelServer([], name="e2e-app-server") as model:
            (home / "config.toml").write_text(codex_config_toml(model.base_url))
            run = Run("0.169.0", Scenario("e2e", "sidecar", ()), home, cwd, model, tmp_path / "codex.log")
            app = AppServer(run)
            stop = threading.Event()
            forwarder = threading.Thread(target=_forward, args=(app.lines, sock, stop))
            forwarder.start()
            try:
                app.request("initialize", {"clientInfo": {"name": "e2e", "title": "e2e", "version": "0"}})
                app.notify("initialized")
                thread = app.request(
                    "thread/start",
                    {"cwd": str(cwd), "approvalPolicy": "never", "sandbox": SANDBOX["0.169.0"]},
                )
                thread_id = thread["thread"]["id"]
                model.push(
                    Step([Reasoning("Look around"), Shell("echo sidecar-output")]), Step([Message("Seen.")])
                )
                started = app.request(
                    "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "look"}]}
                )
                app.wait_turn_end(thread_id, started["turn"]["id"], 120)
            finally:
                app.close()
                stop.set()
                forwarder.join(timeout=30)
            assert model.remaining == 0
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, stderr.decode(errors="replace")[-4000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()

    conversation = call(convex.url, "query", "history:getConversation", {"conversationId": thread_id})
    assert conversation is not None and conversation["conversation"]["threadId"] == thread_id
    [turn] = conversation["turns"]
    detail = call(convex.url, "query", "history:getTurn", {"turnId": turn["turnId"]})
    assert [m["content"] for m in detail["messages"] if m["role"] == "assistant"] == ["Seen."]
    [command] = detail["commands"]
    output = call(convex.url, "query", "history:getCommandOutput", {"callId": command["callId"]})
    assert "sidecar-output" in output["stdout"] + (command.get("aggregatedOutput") or "")
    events = [e for e in log_events(stderr) if e.get("event") == "stopping: flushing what was read"]
    assert events, "SIGTERM was handled as a graceful stop"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_refused_key_keeps_everything_for_the_next_start(
    convex: ConvexLocal, env: dict[str, str], tmp_path: Path
) -> None:
    stream = (REPO / "fixtures" / "codex-0.169.0" / "app-server" / "command_outputs.jsonl").read_bytes()
    state = tmp_path / "state"
    wrong = tmp_path / "wrong-key"
    wrong.write_text("convex-local|not-the-key\n")
    port = _free_port()
    daemon = subprocess.Popen(
        ingestor_argv(
            "run",
            convex.url,
            state,
            f"--convex-key-file={wrong}",
            f"--metrics=127.0.0.1:{port}",
            "--flush-timeout=1",
        ),
        env=env,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert daemon.stdin is not None
        daemon.stdin.write(stream)
        daemon.stdin.flush()
        deadline = time.monotonic() + 30
        # `delivery_failing` joins it once the failures have lasted --unready-after (5 s).
        while (ready := http_get(f"http://127.0.0.1:{port}/readyz"))[0] != 503 or "convex_auth" not in ready[
            1
        ]:
            assert time.monotonic() < deadline, "never reported not-ready"
            time.sleep(0.1)
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "ingestor_ready 0.0" in metrics
        _, stderr = daemon.communicate(timeout=60)  # closes stdin: end of input, flush, exit
        assert daemon.returncode == 1  # a one-shot run whose key was refused: not a success
        assert b"convex refused the requests (auth" in stderr.splitlines()[-1]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    logs = log_events(stderr)
    refused = [e for e in logs if str(e.get("event", "")).startswith("convex refused the request")]
    assert len(refused) == 1, "one actionable error per incident"
    assert "CONVEX_DEPLOY_KEY" in refused[0]["event"]
    assert b"not-the-key" not in stderr
    assert convex.stats()["executed"]["mutation"] == 0

    good = tmp_path / "key"
    good.write_text(str(convex.admin_key))
    run_ingestor(convex.url, state, b"", f"--convex-key-file={good}", env=env)
    clean_state = tmp_path / "clean"
    delivered = dump_history(convex.url, app_server_conversations(stream))
    convex.reset()
    run_ingestor(convex.url, clean_state, stream, env=env)
    assert dump_history(convex.url, app_server_conversations(stream)) == delivered
    assert row_count(delivered) > 5


def test_replaying_codex_session_files_twice_stores_each_fact_once(
    convex: ConvexLocal, env: dict[str, str], tmp_path: Path
) -> None:
    sessions = REPO / "fixtures" / "codex-0.169.0" / "sessions"
    conversations = sorted(
        {json.loads(path.open().readline())["payload"]["id"] for path in sessions.rglob("rollout-*.jsonl")}
    )
    replay = [*INGESTOR, "replay", str(sessions), "--sink=convex", f"--convex-url={convex.url}"]
    first = subprocess.run(
        [*replay, f"--state-dir={tmp_path / 'a'}"], env=env, capture_output=True, check=False
    )
    assert first.returncode == 0, first.stderr.decode(errors="replace")[-4000:]
    once = dump_history(convex.url, conversations)
    assert row_count(once) > 100
    second = subprocess.run(
        [*replay, f"--state-dir={tmp_path / 'b'}"], env=env, capture_output=True, check=False
    )
    assert second.returncode == 0, second.stderr.decode(errors="replace")[-4000:]
    assert dump_history(convex.url, conversations) == once


BIG_THREAD = "0big-thread"


def _big_stream() -> tuple[bytes, dict[str, Any], str]:
    """An exec --json stream whose command output makes a 12 MiB line; that line and the output."""
    output = "".join(f"row {n:07d} é😀 {'x' * 90}\n" for n in range(115_000))
    command = {"id": "item_1", "type": "command_execution", "command": "cat big.log"}
    item = {**command, "aggregated_output": output, "exit_code": 0, "status": "completed"}
    big = {"type": "item.completed", "item": item}
    lines = [
        {"type": "thread.started", "thread_id": BIG_THREAD},
        {"type": "turn.started"},
        {"type": "item.started", "item": {**command, "aggregated_output": "", "status": "in_progress"}},
        big,
        {"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}},
    ]
    stream = b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)
    assert 12 * 2**20 < len(json.dumps(big, ensure_ascii=False).encode()) < 16 * 2**20
    return stream, big, output


def _assert_big_stored(url: str, big: dict[str, Any], output: str) -> None:
    events: list[Any] = []
    cursor = None
    while True:  # one event per page: a page reads its events' values whole (16 MiB per query)
        page = call(
            url,
            "query",
            "history:listEvents",
            {"conversationId": BIG_THREAD, "paginationOpts": {"numItems": 1, "cursor": cursor}},
        )
        events += page["page"]
        if page["isDone"]:
            break
        cursor = page["continueCursor"]
    assert [event["payload"] for event in events].count(big) == 1, "the big event, once"
    [turn] = call(url, "query", "history:getConversation", {"conversationId": BIG_THREAD})["turns"]
    [command] = call(url, "query", "history:getTurn", {"turnId": turn["turnId"]})["commands"]
    assert command["aggregatedOutput"] == output
    assert command["status"] == "completed" and command["exitCode"] == 0


def test_a_12_mib_line_is_staged_and_stored_whole(
    convex: ConvexLocal, env: dict[str, str], tmp_path: Path
) -> None:
    stream, big, output = _big_stream()
    result = run_ingestor(convex.url, tmp_path, stream, env=env, timeout=300)
    _assert_big_stored(convex.url, big, output)
    assert not (tmp_path / "dead-letter.jsonl").exists()
    staged = [e for e in log_events(result.stderr) if e.get("event") == "staged a large value"]
    assert {e["field"] for e in staged} == {"payload", "aggregatedOutput"}


def test_a_kill_mid_staging_then_a_restart_stores_the_line_once(
    convex: ConvexLocal, env: dict[str, str], tmp_path: Path
) -> None:
    stream, big, output = _big_stream()
    convex.faults(delayMs=100)  # staging takes a few seconds: time to kill the daemon in the middle
    with daemon_process(ingestor_argv("run", convex.url, tmp_path, "--flush-timeout=120"), env) as daemon:
        assert daemon.stdin is not None
        daemon.stdin.write(stream)
        daemon.stdin.close()
        # A few batches, then parts staged.
        kill_after_mutations(daemon, convex, 8, timeout=60, reason="no staging before the kill")
    with sqlite3.connect(tmp_path / "spool.sqlite3") as db:
        [(spooled,)] = db.execute("SELECT count(*) FROM spool WHERE size > 8388608").fetchall()
    assert spooled == 2, "killed before both big ops were applied"
    convex.faults(delayMs=0, dropAfterCommitNext=3)  # staging calls that commit but go unanswered
    result = run_ingestor(convex.url, tmp_path, b"", env=env, timeout=300)
    assert b"convex call failed, will retry" in result.stderr
    assert convex.stats()["droppedResponses"] == 3
    _assert_big_stored(convex.url, big, output)
    assert not (tmp_path / "dead-letter.jsonl").exists()
