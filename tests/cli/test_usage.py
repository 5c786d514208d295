"""`ingestor usage` against the truth: the usage every real recording is known to hold (the model
server's own count of every model call, per thread, in fixtures/manifest.json, never read back from
the recording), and against the peer tool ccusage on the same session files."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Final

import anyio
import orjson
import pytest

from ingestor.cli import usage
from ingestor.sinks.sqlite.history import SqliteHistory
from tests.golden.store import FIXTURES, exec_run_streams, normalize_fixture, open_store

REPO: Final = Path(__file__).resolve().parents[2]
CCUSAGE: Final = REPO / "node_modules/@ccusage/codex/dist/index.js"
FIELDS: Final = ("inputTokens", "cachedInputTokens", "outputTokens", "reasoningOutputTokens")


def _entries() -> list[dict[str, Any]]:
    entries = orjson.loads((FIXTURES / "manifest.json").read_bytes())["files"]
    return [e for e in entries if (FIXTURES / e["path"]).exists()]


ENTRIES: Final = _entries()


def _truth(entry: dict[str, Any]) -> list[tuple[int, ...]]:
    """Per thread, the tokens the model server reported for that thread's model calls. Not Codex's
    cumulative totals (`usage_total_by_thread`): a fork's include what its parent spent."""
    facts = entry["facts"]
    spent = [[0, 0, 0, 0] for _ in facts["usage_total_by_thread"]]
    for turn in facts["turns"]:
        thread = spent[turn["thread_index"]]
        for call in turn["model_calls"]:
            reported = call.get("usage")
            if reported is not None:
                thread[0] += reported["input_tokens"]
                thread[1] += reported["input_tokens_details"]["cached_tokens"]
                thread[2] += reported["output_tokens"]
                thread[3] += reported["output_tokens_details"]["reasoning_tokens"]
    return [tuple(thread) for thread in spent]


def _by_session(paths: list[Path]) -> list[dict[str, Any]]:
    return _report(paths, "session")


def _daily(paths: list[Path]) -> list[dict[str, Any]]:
    return _report(paths, "day")


def _day_of(entry: dict[str, Any]) -> str:
    """The UTC day of a session file, from its name (rollout-YYYY-MM-DDT..., recorded with TZ=UTC)."""
    return Path(entry["path"]).name[len("rollout-") :][:10]


def _report(paths: list[Path], by: usage.By) -> list[dict[str, Any]]:
    """`usage --by BY` over a store holding these recordings."""
    ops = [op for path in paths for op in normalize_fixture(path)]
    conn = open_store(ops)

    async def read() -> list[dict[str, Any]]:
        return await usage.read_snapshots(SqliteHistory(conn))

    try:
        snapshots = anyio.run(read)
    finally:
        conn.close()
    return usage.report(usage.increments(snapshots), by)


def _counts(rows: list[dict[str, Any]]) -> list[tuple[int, ...]]:
    return sorted(tuple(row[f] for f in FIELDS) for row in rows)


def _ids(e: dict[str, Any]) -> str:
    return f"{e['codex_version']}/{Path(e['path']).parent.name}/{e['kind']}/{Path(e['path']).name[:24]}"


@pytest.mark.parametrize("entry", [pytest.param(e, id=_ids(e)) for e in ENTRIES])
def test_usage_of_every_recording_is_what_the_model_server_counted(entry: dict[str, Any]) -> None:
    """Including 0.63's restarted totals (`exec resume` counts from zero again in the same thread):
    in resumed_run, 2,300 then a restarted 2,700, above the first in every counter."""
    path = FIXTURES / entry["path"]
    rows = _by_session([path])
    truth = _truth(entry)
    if entry["kind"] == "session":  # one file, one thread: which one is in its session_meta
        assert len(rows) == 1
        assert _counts(rows)[0] in truth
    elif (entry["codex_version"], entry["mode"]) == ("0.63.0", "exec"):
        # 0.63's exec stream does not report reasoning tokens: those are unknown, counted as 0.
        assert _counts(rows) == sorted((*t[:3], 0) for t in truth if any(t))
    else:
        assert _counts(rows) == sorted(t for t in truth if any(t))
    for row in rows:
        assert row["totalTokens"] == row["inputTokens"] + row["outputTokens"]


@pytest.mark.parametrize("version", ["0.169.0", "0.63.0"])
@pytest.mark.parametrize("scenario", ["multi_turn", "tools", "two_threads"])
def test_a_live_stream_and_its_session_files_count_once(version: str, scenario: str) -> None:
    stream = FIXTURES / f"codex-{version}/app-server/{scenario}.jsonl"
    sessions = sorted((FIXTURES / f"codex-{version}/sessions/app-server-{scenario}").glob("rollout-*"))
    entry = next(e for e in ENTRIES if e["path"] == str(stream.relative_to(FIXTURES)))
    truth = sorted(_truth(entry))
    # Either order: the store keeps each distinct total once, whichever channel told it first.
    assert _counts(_by_session([stream, *sessions])) == truth
    assert _counts(_by_session([*sessions, stream])) == truth


FORKS: Final = ("forked_thread", "subagent")


def _fork_channels(scenario: str) -> dict[str, list[Path]]:
    stream = FIXTURES / f"codex-0.169.0/app-server/{scenario}.jsonl"
    sessions = sorted((FIXTURES / f"codex-0.169.0/sessions/app-server-{scenario}").glob("rollout-*"))
    return {
        "live": [stream],
        "session files": sessions,
        "session files, fork first": sessions[::-1],
        "live, then session files": [stream, *sessions],
        "session files, then live": [*sessions, stream],
    }


@pytest.mark.parametrize(
    ("scenario", "channels"),
    [
        pytest.param(scenario, paths, id=f"{scenario}/{name}")
        for scenario in FORKS
        for name, paths in _fork_channels(scenario).items()
    ],
)
def test_a_fork_and_its_parent_count_every_model_call_once(scenario: str, channels: list[Path]) -> None:
    """A fork's totals include its parent's at the fork point (a sub-agent's start from zero): each
    thread's row is what its own model calls used, and the sum is what the model server counted."""
    entry = next(e for e in ENTRIES if e["path"] == f"codex-0.169.0/app-server/{scenario}.jsonl")
    truth = _truth(entry)
    rows = _by_session(channels)
    assert _counts(rows) == sorted(truth)
    spent = [sum(column) for column in zip(*truth, strict=True)]
    assert [sum(row[f] for row in _report(channels, "day")) for f in FIELDS] == spent


def _ccusage(codex_home: Path, report: str) -> Any:
    if shutil.which("node") is None or not CCUSAGE.exists():
        pytest.skip("node or @ccusage/codex missing: run scripts/bootstrap (npm ci)")
    env = {**os.environ, "CODEX_HOME": str(codex_home), "TZ": "UTC", "NO_COLOR": "1"}
    result = subprocess.run(
        ["node", str(CCUSAGE), report, "--offline", "--json"], env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return json.loads(result.stdout)


def test_against_ccusage_on_the_same_session_files(tmp_path: Path) -> None:
    """Every session file of every recording, read by both. Where ccusage is right they agree;
    where they differ, the truth (the model server's count) is ours:

    - Codex 0.63 sends every `token_count` twice (`last_token_usage` included): ccusage adds the
      repeated `last_token_usage` again, we store the repeated cumulative total once.
    - 0.63 `exec resume` restarts the cumulative total: ccusage reads `last_token_usage` and gets
      that right; so do we (the snapshot where `last_token_usage` == `total_token_usage` is stored
      `restarted` and counts in full), also where the restarted total is above the previous one.
    """
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    files = [FIXTURES / e["path"] for e in ENTRIES if e["kind"] == "session"]
    for path in files:
        shutil.copy(path, sessions / path.name)
    # ccusage names a session by its file: rollout-<time>-<thread id>.
    theirs = {s["sessionId"][-36:]: s for s in _ccusage(tmp_path, "session")["sessions"]}
    ours = {row["threadId"]: row for row in _by_session(files)}
    truth = {}
    for e in ENTRIES:
        if e["kind"] == "session":
            thread_id = Path(e["path"]).stem[-36:]
            thread = _truth_of_file(e)
            truth[thread_id] = (e, thread)
    assert ours.keys() == theirs.keys() == truth.keys()
    agree, ccusage_wrong = [], []
    for thread_id, (entry, expected) in truth.items():
        mine = tuple(ours[thread_id][f] for f in FIELDS)
        peer = tuple(theirs[thread_id][f] for f in FIELDS)
        assert mine == expected, f"{entry['path']}: ours {mine} != truth {expected}"
        (agree if peer == expected else ccusage_wrong).append(entry)
    # ccusage is right on every 0.169 file, wrong on most 0.63 ones (the repeated token_count).
    assert {e["codex_version"] for e in ccusage_wrong} == {"0.63.0"}
    assert len(agree) >= 10 and len(ccusage_wrong) >= 5
    for entry in ccusage_wrong:
        thread_id = Path(entry["path"]).stem[-36:]
        assert all(theirs[thread_id][f] >= ours[thread_id][f] for f in FIELDS), (
            "ccusage only over-counts here"
        )
    # Daily: the same sums per day, apart from ccusage's 0.63 over-count.
    days_theirs = {
        datetime.datetime.strptime(d["date"], "%b %d, %Y").date().isoformat(): d
        for d in _ccusage(tmp_path, "daily")["daily"]
    }
    over: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for entry in ccusage_wrong:
        thread_id = Path(entry["path"]).stem[-36:]
        for i, f in enumerate(FIELDS):
            over[_day_of(entry)][i] += theirs[thread_id][f] - ours[thread_id][f]
    for row in _daily(files):
        day = row["date"]
        assert day in days_theirs, (day, sorted(days_theirs))
        corrected = tuple(days_theirs[day][f] - over[day][i] for i, f in enumerate(FIELDS))
        assert corrected == tuple(row[f] for f in FIELDS)


def _truth_of_file(entry: dict[str, Any]) -> tuple[int, ...]:
    """The usage of the thread a session file holds: the n-th file of a scenario is its n-th thread."""
    siblings = sorted(
        e["path"]
        for e in ENTRIES
        if e["kind"] == "session" and Path(e["path"]).parent == Path(entry["path"]).parent
    )
    return _truth(entry)[siblings.index(entry["path"])]


def test_by_day_week_month_model_group_the_same_usage() -> None:
    files = [FIXTURES / e["path"] for e in ENTRIES if e["kind"] == "session"]
    ops = [op for path in files for op in normalize_fixture(path)]
    conn = open_store(ops)
    try:
        snapshots = anyio.run(usage.read_snapshots, SqliteHistory(conn))
    finally:
        conn.close()
    added = usage.increments(snapshots)
    totals = {by: _sum(usage.report(added, by)) for by in usage.BY}
    assert len(set(totals.values())) == 1
    days = usage.report(added, "day")
    assert [d["date"] for d in days] == sorted(d["date"] for d in days)
    first = days[0]["date"]
    assert _sum(
        usage.report(
            added, "day", since=datetime.date.fromisoformat(first), until=datetime.date.fromisoformat(first)
        )
    ) == _sum(days[:1])
    models = {row["model"] for row in usage.report(added, "model")}
    assert {"mock-model", "gpt-5.5", "gpt-5.1-codex"} <= models


def _sum(rows: list[dict[str, Any]]) -> tuple[int, ...]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        for name in (*FIELDS, "totalTokens"):
            totals[name] += row[name]
    return tuple(totals[name] for name in (*FIELDS, "totalTokens"))


def _cli(*args: str, data: bytes = b"") -> bytes:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
    argv = [sys.executable, "-m", "ingestor", *args]
    result = subprocess.run(argv, input=data, capture_output=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("version", ["0.63.0", "0.169.0"])
def test_usage_of_a_resumed_exec_piped_run_by_run_is_the_model_servers(version: str, tmp_path: Path) -> None:
    """`codex exec --json | ingestor run`, then `codex exec resume --json | ingestor run`: 0.63
    counts the resumed run from zero again, above the first run's total in every counter (2,300 then
    2,700); `usage` counts both runs (5,000), as the model server did. The session file agrees."""
    path = FIXTURES / f"codex-{version}/exec/resumed_run.jsonl"
    entry = next(e for e in ENTRIES if e["path"] == str(path.relative_to(FIXTURES)))
    (truth,) = _truth(entry)
    for run in exec_run_streams(path):
        _cli("run", "--sink", f"sqlite:{tmp_path / 'exec.db'}", data=run)
    (session,) = sorted((FIXTURES / f"codex-{version}/sessions/exec-resumed_run").glob("*.jsonl"))
    _cli("replay", "--sink", f"sqlite:{tmp_path / 'file.db'}", str(session))
    for db, reasoning in (("exec.db", version != "0.63.0"), ("file.db", True)):
        (row,) = orjson.loads(_cli("usage", "--by", "session", "--json", "--sink", f"sqlite:{tmp_path / db}"))
        expected = truth if reasoning else (*truth[:3], 0)  # 0.63's exec stream tells no reasoning
        assert tuple(row[f] for f in FIELDS) == expected, db
        assert row["inputTokens"] == 5000
