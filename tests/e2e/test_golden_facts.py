"""The stored rows of every real recording against the facts fixtures/manifest.json knows about it
(computed from the recording script, never read back from the recording)."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestor.sinks.sqlite.apply import apply_ops
from tests.golden.store import (
    FIXTURES,
    GOLDEN,
    TABLES,
    fixture_lines,
    golden_name,
    normalize_fixture,
    open_store,
    stored_rows,
    table_rows,
)


def _entries() -> list[dict[str, Any]]:
    manifest = FIXTURES / "manifest.json"
    if not manifest.exists():
        return []
    entries = [e for e in orjson.loads(manifest.read_bytes())["files"] if (FIXTURES / e["path"]).exists()]
    # A session file holds one thread: the n-th file of a scenario is its n-th thread.
    sessions: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        if e["kind"] == "session":
            sessions[(e["codex_version"], e["mode"], e["scenario"])].append(e)
    for group in sessions.values():
        for index, e in enumerate(sorted(group, key=lambda e: e["path"])):
            e["thread"] = index
    return entries


ENTRIES = _entries()


def _id(e: dict[str, Any]) -> str:
    return f"{e['codex_version']}-{e['mode']}-{e['scenario']}-{e['kind']}-{e.get('thread', 0)}"


@pytest.fixture(scope="module", params=ENTRIES, ids=[_id(e) for e in ENTRIES])
def case(request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    entry: dict[str, Any] = request.param
    return entry, stored_rows(normalize_fixture(FIXTURES / entry["path"]))


def _expected_threads(entry: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    threads: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for turn in entry["facts"]["turns"]:
        if "thread" not in entry or turn["thread_index"] == entry["thread"]:
            threads[turn["thread_index"]].append(turn)
    return dict(threads)


def _stored_threads(rows: dict[str, list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Turns per conversation, conversations and turns in the order they were first stored."""
    by_conversation: dict[str, list[dict[str, Any]]] = {
        c["conversationId"]: [] for c in rows["conversations"]
    }
    for turn in rows["turns"]:
        by_conversation[turn["conversationId"]].append(turn)
    return list(by_conversation.values())


def _pairs(
    entry: dict[str, Any], rows: dict[str, list[dict[str, Any]]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    expected = _expected_threads(entry)
    stored = _stored_threads(rows)
    assert len(stored) == len(expected), "one conversation per Codex thread"
    pairs = []
    for got, want in zip(stored, expected.values(), strict=True):
        assert len(got) == len(want), "turn count"
        pairs += list(zip(got, want, strict=True))
    return pairs


def test_turns_and_statuses(case: tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]) -> None:
    entry, rows = case
    for got, want in _pairs(entry, rows):
        status = "failed" if want["failed"] else "canceled" if want.get("interrupted") else "succeeded"
        assert got["status"] == status, want["prompt"]
        if want["failed"]:
            assert got.get("error"), "a failed turn says why"


def test_messages_once_each(case: tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]) -> None:
    entry, rows = case
    exec_stream = entry["mode"] == "exec" and entry["kind"] == "stream"  # exec --json prints no prompt
    for got, want in _pairs(entry, rows):
        messages = [m for m in rows["messages"] if m["turnId"] == got["turnId"]]
        assert [m["content"] for m in messages if m["role"] == "assistant"] == want["agent_messages"]
        users = [m["content"] for m in messages if m["role"] == "user"]
        assert users == ([] if exec_stream else [want["prompt"]])


def _shell_commands(rows: dict[str, list[dict[str, Any]]], turn_id: str) -> list[dict[str, Any]]:
    return [c for c in rows["commands"] if c["turnId"] == turn_id and c["source"] == "command"]


def test_commands_argv_and_exit_codes(case: tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]) -> None:
    entry, rows = case
    for got, want in _pairs(entry, rows):
        commands = _shell_commands(rows, got["turnId"])
        assert [c["command"][-1] for c in commands] == [c["command"] for c in want["commands"]]
        for stored, expected in zip(commands, want["commands"], strict=True):
            if want.get("interrupted"):
                assert "exitCode" not in stored or stored["exitCode"] != 0
            else:
                assert stored["exitCode"] == expected["exit_code"]
                assert stored["status"] == ("completed" if expected["exit_code"] == 0 else "failed")


def _expected_tools(entry: dict[str, Any], want: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool calls (not shell commands) a turn's rows must show, in order. A patch that fails
    verification produces no event in the live streams, only a tool output in the session file. A
    plan is a message, and a spawned sub-agent a conversation of its own: neither is a row."""
    calls = [
        t
        for t in want.get("tools", [])
        if t["kind"] not in ("plan", "spawn_agent")
        and (t["kind"] != "file" or t["applies"] or entry["kind"] == "session")
    ]
    return calls + [{"kind": "search", "query": q} for q in want.get("web_searches", [])]


def test_tool_calls_are_commands_rows(case: tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]) -> None:
    """Every file change, MCP call and web search the script made is one `commands` row with the
    right source, target, status and result."""
    entry, rows = case
    exec_stream = entry["mode"] == "exec" and entry["kind"] == "stream"
    old_session = entry["kind"] == "session" and entry["codex_version"] == "0.63.0"
    for got, want in _pairs(entry, rows):
        stored = [c for c in rows["commands"] if c["turnId"] == got["turnId"] and c["source"] != "command"]
        expected = _expected_tools(entry, want)
        assert [c["source"] for c in stored] == [t["kind"] for t in expected], want["prompt"]
        for row, call in zip(stored, expected, strict=True):
            if call["kind"] == "file":
                changes = row["parsedCmd"]["changes"]
                named = {(c["path"].rsplit("/", 1)[-1], c["kind"]) for c in changes}
                assert named == {(c["path"], c["kind"]) for c in call["changes"]}
                moves = {c["movePath"].rsplit("/", 1)[-1] for c in changes if "movePath" in c}
                assert moves == (
                    set() if exec_stream else {c["move_path"] for c in call["changes"] if "move_path" in c}
                )
                # The changed paths, not a move's destination (which exec's stream does not tell).
                assert row["command"] == ["apply_patch", *sorted({c["path"] for c in changes})]
                assert row["status"] == ("completed" if call["applies"] else "failed")
            elif call["kind"] == "mcp":
                assert row["command"] == ["mcp", call["server"], call["tool"]]
                assert row["parsedCmd"]["arguments"] == call["arguments"]
                if "result" in call:
                    assert row["status"] == "completed"
                    assert call["result"]["content"][0]["text"] in row["aggregatedOutput"] or old_session
                    assert "42" in row["aggregatedOutput"]
                elif "is_error_text" in call:
                    assert call["is_error_text"] in row["aggregatedOutput"]
                    # 0.63 session files keep only the content of an isError result, not the flag.
                    assert row["status"] == ("completed" if old_session else "failed")
                else:
                    assert row["status"] == "failed"
                    assert call["rpc_error"]["message"] in row["aggregatedOutput"]
            else:
                assert row["command"] == ["web_search", call["query"]]
                assert row["status"] == "completed"


def test_latest_plan_per_turn(case: tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]) -> None:
    """A turn's plan updates are its `tool` messages; the last one holds each step's status (exec
    reports only done or not)."""
    entry, rows = case
    exec_stream = entry["mode"] == "exec" and entry["kind"] == "stream"
    for got, want in _pairs(entry, rows):
        plans = [
            m["rawContent"]
            for m in rows["messages"]
            if m["turnId"] == got["turnId"] and m["role"] == "tool" and m["rawContent"]["type"] == "plan"
        ]
        expected = [t for t in want.get("tools", []) if t["kind"] == "plan"]
        assert len(plans) == len(expected), want["prompt"]
        for stored, call in zip(plans, expected, strict=True):
            statuses = {"in_progress": "pending" if exec_stream else "inProgress"}
            steps = [
                {"step": p["step"], "status": statuses.get(p["status"], p["status"])} for p in call["plan"]
            ]
            assert stored["steps"] == steps
            assert stored.get("explanation") == (None if exec_stream else call["explanation"])


def test_invariants(case: tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]) -> None:
    """On every recording: no output chunk without its call, no turn ending before it starts, and
    no call left running once its turn has ended."""
    _, rows = case
    calls = {c["callId"]: c for c in rows["commands"]}
    for chunk in rows["command_chunks"]:
        call = calls.get(chunk["callId"])
        assert call is not None and call["command"] and call.get("source"), chunk["callId"]
    turns = {t["turnId"]: t for t in rows["turns"]}
    for turn in turns.values():
        assert "endedAt" not in turn or turn["endedAt"] >= turn["startedAt"], turn["turnId"]
    for call in calls.values():
        if turns[call["turnId"]]["status"] != "running":
            assert call.get("status") != "running", call["callId"]


def _digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def test_chunks_contiguous_and_exact_for_legacy_streams(
    case: tuple[dict[str, Any], dict[str, list[dict[str, Any]]]],
) -> None:
    entry, rows = case
    by_call: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for chunk in rows["command_chunks"]:
        by_call[chunk["callId"]].append(chunk)
    for call, chunks in by_call.items():
        assert [c["seq"] for c in chunks] == list(range(len(chunks))), call
    calls = {c["callId"]: c for c in rows["commands"]}
    assert set(by_call) <= set(calls)
    for call in by_call:
        assert calls[call]["chunked"]
    if not (
        entry["codex_version"] == "0.63.0" and entry["mode"] == "app-server" and entry["kind"] == "stream"
    ):
        return  # only legacy deltas carry exact bytes per stream
    for got, want in _pairs(entry, rows):
        commands = _shell_commands(rows, got["turnId"])
        for stored, expected in zip(commands, want["commands"], strict=True):
            for stream in ("stdout", "stderr"):
                data = b"".join(
                    base64.b64decode(c["chunkBase64"])
                    for c in by_call[stored["callId"]]
                    if c["stream"] == stream
                )
                assert _digest(data) == (expected[stream]["len"], expected[stream]["sha256"]), (
                    stored["callId"],
                    stream,
                )


def test_usage_totals_and_rate_limits(case: tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]) -> None:
    entry, rows = case
    facts = entry["facts"]
    conversation_of = {t["turnId"]: t["conversationId"] for t in rows["turns"]}
    order = [c["conversationId"] for c in rows["conversations"]]
    finals: dict[int, tuple[Any, ...]] = {}
    for usage in rows["usage_snapshots"]:
        thread = order.index(conversation_of[usage["turnId"]])
        totals = tuple(usage.get(k) for k in ("totalInputTokens", "cachedInputTokens", "outputTokens"))
        finals[thread] = max(finals.get(thread, totals), totals)
    if not (entry["codex_version"] == "0.63.0" and entry["mode"] == "exec"):  # 0.63 exec resets on resume
        totals_by_thread = facts["usage_total_by_thread"]
        expected = {
            i: (t["input_tokens"], t["cached_input_tokens"], t["output_tokens"])
            for i, t in enumerate(totals_by_thread)
            if "thread" not in entry or i == entry["thread"]
        }
        assert sorted(finals.values()) == sorted(expected.values())
    calls = sum(len(t["model_calls"]) for t in facts["turns"])
    for scope, minutes in (("primary", 300), ("secondary", 10080)):
        limits = [r for r in rows["rate_limits"] if r["scope"] == scope]
        assert all(r["windowMinutes"] == minutes for r in limits)
        assert len(limits) <= calls, "one snapshot per model call at most: v2 and legacy copies merged"


def test_every_distinct_line_of_a_thread_is_one_raw_event(
    case: tuple[dict[str, Any], dict[str, list[dict[str, Any]]]],
) -> None:
    entry, rows = case
    path = FIXTURES / entry["path"]
    lines = fixture_lines(path)
    events = [op for op in normalize_fixture(path) if op["op"] == "appendEvent"]
    assert len(events) == len(lines)
    # A line byte for byte the same as an earlier one of its thread (exec's `turn.started` of every
    # resumed run, 0.63's twice-sent rate limits) is that line again (raw.event_op).
    scopes = [op.get("thread") or op["args"]["conversationId"] for op in events]
    assert len(rows["events_raw"]) == len({(s, line.data) for s, line in zip(scopes, lines, strict=True)})


@pytest.mark.parametrize("entry", ENTRIES, ids=_id)
def test_replaying_twice_adds_nothing(entry: dict[str, Any]) -> None:
    path: Path = FIXTURES / entry["path"]
    ops = normalize_fixture(path)
    assert normalize_fixture(path) == ops
    conn = open_store(ops)
    before = {
        t: table_rows(conn, t) for t in ("turns", "commands", "messages", "command_chunks", "events_raw")
    }
    outcome = apply_ops(conn, ops)
    assert set(outcome.counts) == {"duplicate"}
    assert {t: table_rows(conn, t) for t in before} == before


CLI_FIXTURES = [
    "codex-0.63.0/app-server/command_outputs.jsonl",
    "codex-0.169.0/app-server/two_threads.jsonl",
    "codex-0.169.0/exec/multi_turn.jsonl",
]


@pytest.mark.parametrize("name", [n for n in CLI_FIXTURES if (FIXTURES / n).exists()])
def test_cli_replay_into_sqlite_stores_the_golden_rows(name: str, tmp_path: Path) -> None:
    """The whole daemon path (`ingestor replay FILE --sink sqlite:DB`), twice: the same rows as the
    golden file (times aside: the CLI stamps lines with the wall clock), and nothing added the 2nd time."""
    db = tmp_path / "store.db"
    command = [sys.executable, "-m", "ingestor", "replay", str(FIXTURES / name), "--sink", f"sqlite:{db}"]
    counts = []
    for _ in range(2):
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        conn = sqlite3.connect(db)
        try:
            counts.append({t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES})
        finally:
            conn.close()
    golden = orjson.loads((GOLDEN / golden_name(FIXTURES / name)).read_bytes())
    expected = {t: len(golden[t]) for t in TABLES if t not in ("command_chunks", "events_raw")}
    expected["command_chunks"] = sum(c["chunks"] for c in golden["command_chunks"].values())
    expected["events_raw"] = golden["events_raw"]["count"]
    assert counts == [expected, expected]
