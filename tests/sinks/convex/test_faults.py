"""Faults between the daemon and Convex, injected by the local stand-in; each run must end with
exactly the state of a clean run of the same input (full history dumps compared).

- 503 and 429 bursts, added latency, and commits whose response is dropped (the daemon retries a
  batch Convex already applied: the keys make the second application a no-op);
- the daemon SIGKILLed mid-stream with a backlog in its spool, restarted on the same state directory
  and fed the whole input again.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.convex_e2e import (
    FIXTURES,
    daemon_env,
    daemon_process,
    dump_history,
    ingestor_argv,
    kill_after_mutations,
    row_count,
    run_ingestor,
)
from tests.helpers.convex_local import ConvexLocal

pytestmark = pytest.mark.e2e

# A recorded app-server session: three turns with commands, messages, usage and rate limits.
STREAM = (FIXTURES / "app-server" / "multi_turn.jsonl").read_bytes()
SMALL_BATCHES = "--batch-max-ops=8"  # many requests, so every fault hits several of them


def _thread_ids(stream: bytes) -> list[str]:
    ids: list[str] = []
    for line in stream.splitlines():
        message = orjson.loads(line)
        thread = (message.get("result") or {}).get("thread")
        if isinstance(thread, dict) and thread["id"] not in ids:
            ids.append(thread["id"])
    return ids


@pytest.fixture
def convex(convex_local: ConvexLocal) -> ConvexLocal:
    convex_local.reset()
    return convex_local


@pytest.fixture(scope="module")
def env(convex_local: ConvexLocal) -> dict[str, str]:
    assert convex_local.admin_key is not None
    return daemon_env(CONVEX_ADMIN_KEY=convex_local.admin_key)


@pytest.fixture(scope="module")
def clean(
    convex_local: ConvexLocal, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    convex = convex_local
    convex.reset()
    run_ingestor(convex.url, tmp_path_factory.mktemp("clean"), STREAM, SMALL_BATCHES, env=env)
    dump = dump_history(convex.url, _thread_ids(STREAM))
    assert row_count(dump) > 30
    return dump


@pytest.mark.parametrize(
    ("faults", "served"),
    [
        ({"failNext": 4, "status": 503}, "faultsServed"),
        ({"failNext": 4, "status": 429}, "faultsServed"),
        ({"failNext": 3, "status": 500}, "faultsServed"),
        ({"delayMs": 150}, None),
        ({"dropAfterCommitNext": 3}, "droppedResponses"),
    ],
    ids=["503-burst", "429-burst", "500-burst", "latency", "commit-then-drop"],
)
def test_fault_leaves_the_clean_state(
    convex: ConvexLocal,
    env: dict[str, str],
    clean: dict[str, Any],
    tmp_path: Path,
    faults: dict[str, int],
    served: str | None,
) -> None:
    convex.faults(**faults)
    result = run_ingestor(convex.url, tmp_path, STREAM, SMALL_BATCHES, "--flush-timeout=60", env=env)
    stats = convex.stats()
    if served is not None:
        assert stats[served] == next(v for k, v in faults.items() if k != "status")
    assert dump_history(convex.url, _thread_ids(STREAM)) == clean
    assert not (tmp_path / "dead-letter.jsonl").exists()
    if served:
        assert b"convex call failed, will retry" in result.stderr


def _generated_stream(threads: int = 4, turns: int = 12) -> tuple[bytes, list[str]]:
    """A long `codex exec --json`-shaped stream: several threads, each with many turns."""
    lines: list[dict[str, Any]] = []
    ids = [f"0kill-thread-{t}" for t in range(threads)]
    for thread_id in ids:
        lines.append({"type": "thread.started", "thread_id": thread_id})
        for n in range(turns):
            command = {"id": "item_1", "type": "command_execution", "command": f"/bin/bash -lc 'echo {n}'"}
            lines += [
                {"type": "turn.started"},
                {
                    "type": "item.completed",
                    "item": {"id": "item_0", "type": "reasoning", "text": f"step {n}"},
                },
                {
                    "type": "item.started",
                    "item": {**command, "aggregated_output": "", "status": "in_progress"},
                },
                {
                    "type": "item.completed",
                    "item": {**command, "aggregated_output": f"{n}\n", "exit_code": 0, "status": "completed"},
                },
                {
                    "type": "item.completed",
                    "item": {"id": "item_2", "type": "agent_message", "text": f"did {n}"},
                },
                {"type": "turn.completed", "usage": {"input_tokens": 100 * n, "output_tokens": n}},
            ]
    return b"".join(orjson.dumps(line) + b"\n" for line in lines), ids


def _spooled(state_dir: Path) -> int:
    with sqlite3.connect(state_dir / "spool.sqlite3") as db:
        count: int = db.execute("SELECT count(*) FROM spool").fetchone()[0]
    return count


def test_sigkill_mid_stream_then_restart_and_refeed(
    convex: ConvexLocal, env: dict[str, str], tmp_path: Path
) -> None:
    stream, conversations = _generated_stream()
    run_ingestor(convex.url, tmp_path / "clean", stream, env=env)
    clean = dump_history(convex.url, conversations)
    assert row_count(clean) > 300

    convex.reset()
    convex.faults(delayMs=40)  # deliveries lag behind reading: the spool holds a backlog
    state = tmp_path / "state"
    with daemon_process(ingestor_argv("run", convex.url, state, "--batch-max-ops=20"), env) as daemon:
        assert daemon.stdin is not None
        lines = stream.splitlines(keepends=True)
        half = len(lines) // 2
        for start in range(0, half, 10):  # slowly, as a live producer would
            daemon.stdin.write(b"".join(lines[start : start + 10]))
            daemon.stdin.flush()
            time.sleep(0.01)
        kill_after_mutations(daemon, convex, 3, timeout=30, reason="no deliveries before the kill")
    backlog = _spooled(state)
    assert backlog > 0, "killed with undelivered ops in the spool"
    partial = dump_history(convex.url, conversations)
    assert row_count(partial) < row_count(clean)

    convex.faults(delayMs=0)
    run_ingestor(convex.url, state, stream, env=env)
    assert _spooled(state) == 0
    assert dump_history(convex.url, conversations) == clean
