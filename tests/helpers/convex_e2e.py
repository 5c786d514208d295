"""Helpers for the end-to-end tests of the Convex sink: the daemon as a subprocess, history dumps.

The local Convex stand-in is the session fixture `convex_local` (tests/helpers/convex_local.py); what is
here is running `ingestor` against it and reading the whole stored history of conversations back
through the `history:*` queries, in a form that compares between runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest

from ingestor.sinks.convex.client import ADMIN_IDENTITY, admin_authorization
from tests.helpers.convex_local import ADMIN_KEY, ConvexLocal

REPO: Final = Path(__file__).resolve().parents[2]
INGESTOR: Final = [sys.executable, "-m", "ingestor"]
CODEX_JS: Final = REPO / "testing" / "codex" / "node_modules" / "codex-current" / "bin" / "codex.js"
FIXTURES: Final = REPO / "fixtures" / "codex-0.169.0"

# `testing.codex` (the model server and the app-server driver) is imported from the repo root.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

needs_codex = pytest.mark.skipif(
    not CODEX_JS.is_file(),
    reason="testing/codex/node_modules missing (the real Codex CLI): run `npm ci --prefix testing/codex`",
)

# Columns the daemon fills from the wall clock when a stream carries no time of its own (exec --json
# lines): they differ between two runs of the same input and are not what "the same state" means.
WALL_CLOCK_FIELDS: Final = frozenset(
    {"receivedAt", "createdAt", "capturedAt", "startedAt", "endedAt", "lastSeenAt", "durationMs"}
)


def daemon_env(**extra: str) -> dict[str, str]:
    """The environment for `ingestor`: no Convex settings inherited from the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEX_", "VITE_CONVEX"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def ingestor_argv(command: str, url: str, state_dir: Path, *extra: str) -> list[str]:
    return [
        *INGESTOR,
        command,
        "--sink=convex",
        f"--convex-url={url}",
        f"--state-dir={state_dir}",
        *extra,
    ]


def run_ingestor(
    url: str,
    state_dir: Path,
    stdin: bytes,
    *extra: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """`ingestor run --sink convex` fed `stdin` to its end; fails the test on a non-zero exit."""
    result = subprocess.run(
        ingestor_argv("run", url, state_dir, *extra),
        input=stdin,
        capture_output=True,
        env=env or daemon_env(),
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    return result


@contextmanager
def daemon_process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """The daemon fed through a pipe; killed on the way out if the test left it running."""
    daemon = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        yield daemon
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def kill_after_mutations(
    daemon: subprocess.Popen[bytes], convex: ConvexLocal, count: int, *, timeout: float, reason: str
) -> None:
    """SIGKILL the daemon once the server has executed `count` mutations: mid-delivery."""
    deadline = time.monotonic() + timeout
    while convex.stats()["executed"]["mutation"] < count:
        assert time.monotonic() < deadline, reason
        time.sleep(0.02)
    daemon.kill()
    assert daemon.wait(timeout=10) == -9


def log_events(stderr: bytes) -> list[dict[str, Any]]:
    """The daemon's JSON log lines (stderr is not a terminal under subprocess)."""
    events = []
    for line in stderr.splitlines():
        if line.startswith(b"{"):
            events.append(json.loads(line))
    return events


def call(url: str, kind: str, path: str, args: dict[str, Any], key: str | None = ADMIN_KEY) -> Any:
    request = urllib.request.Request(
        f"{url}/api/{kind}",
        data=json.dumps({"path": path, "args": args, "format": "json"}).encode(),
        headers={
            "Content-Type": "application/json",
            # As `ingestor show`: the admin key acting as the admin identity (public functions need one).
            **({"Authorization": admin_authorization(key, ADMIN_IDENTITY)} if key else {}),
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["value"]


def _strip(value: Any) -> Any:
    """Without Convex bookkeeping (`_id`, `_creationTime`) and wall-clock columns."""
    if isinstance(value, dict):
        return {
            k: _strip(v) for k, v in value.items() if not k.startswith("_") and k not in WALL_CLOCK_FIELDS
        }
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _rows(rows: list[Any]) -> list[Any]:
    """Rows in a canonical order: rows that tie on a masked timestamp may come back either way."""
    return sorted((_strip(row) for row in rows), key=lambda row: json.dumps(row, sort_keys=True))


def dump_history(url: str, conversation_ids: Sequence[str], key: str | None = ADMIN_KEY) -> dict[str, Any]:
    """Everything stored for these conversations, through the same queries `ingestor show` uses."""
    out: dict[str, Any] = {}
    for conversation_id in conversation_ids:
        conversation = call(url, "query", "history:getConversation", {"conversationId": conversation_id}, key)
        turns: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        for turn in (conversation or {}).get("turns", []):
            detail = call(url, "query", "history:getTurn", {"turnId": turn["turnId"]}, key)
            turns[turn["turnId"]] = detail
            for command in detail["commands"]:
                outputs[command["callId"]] = call(
                    url, "query", "history:getCommandOutput", {"callId": command["callId"]}, key
                )
        events: list[Any] = []
        cursor = None
        while True:
            page = call(
                url,
                "query",
                "history:listEvents",
                {"conversationId": conversation_id, "paginationOpts": {"numItems": 100, "cursor": cursor}},
                key,
            )
            events.extend(page["page"])
            if page["isDone"]:
                break
            cursor = page["continueCursor"]
        if conversation is not None:
            conversation = {**_strip(conversation), "turns": _rows(conversation["turns"])}
        out[conversation_id] = {
            "conversation": conversation,
            "turns": {
                turn_id: {k: _rows(v) if isinstance(v, list) else _strip(v) for k, v in detail.items()}
                for turn_id, detail in turns.items()
            },
            "commandOutputs": _strip(outputs),
            "events": _rows(events),
        }
    return out


def row_count(dump: dict[str, Any]) -> int:
    """Rows in a dump (for asserting that a comparison compares something)."""
    total = 0
    for conversation in dump.values():
        total += 1 + len(conversation["events"])
        for turn in conversation["turns"].values():
            total += 1 + sum(len(turn[k]) for k in ("messages", "reasoningSections", "commands"))
            total += len(turn["usageSnapshots"]) + len(turn["rateLimits"])
    return total


def app_server_conversations(app_server_stream: bytes) -> list[str]:
    """Thread ids started in an app-server stream (each is a conversation)."""
    ids = []
    for line in app_server_stream.splitlines():
        message = json.loads(line)
        thread = (message.get("result") or {}).get("thread") or (message.get("params") or {}).get("thread")
        if isinstance(thread, dict) and thread.get("id") not in ids:
            ids.append(thread["id"])
    return ids


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET (a daemon's /healthz, /readyz, /metrics); 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""
