"""Exactly once across the daemon's whole life (docs/operations.md, "Across processes and channels").

Real recordings, fed the ways a sidecar meets them: one stream cut into pieces that separate
processes (or reconnecting producers) deliver, and one thread seen through two channels (the live
app-server stream and the session file Codex wrote for it), in every order and twice. The store must
be the one a single process makes of the whole stream, and never hold more rows than the richest
single channel.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.lines import Line
from ingestor.normalize import Normalizer, codex_time, revealed_thread
from ingestor.normalize.detect import classify
from ingestor.ops import Op
from ingestor.sinks.sqlite.apply import apply_ops
from ingestor.sinks.sqlite.sink import connect
from tests.golden.store import FIXTURES, T0, TABLES, exec_run_streams, fixture_lines, summarize, table_rows


def normalized(lines: Sequence[Line], source: str, conversation_id: str | None = None) -> list[Op]:
    n = Normalizer(source, conversation_id=conversation_id)
    ops: list[Op] = []
    for line in lines:
        ops += n.feed(line)
    return ops + n.finish()


def store(*deliveries: list[Op]) -> sqlite3.Connection:
    conn = connect(":memory:")
    for ops in deliveries:
        apply_ops(conn, ops)
    return conn


def rows(conn: sqlite3.Connection) -> dict[str, list[dict[str, Any]]]:
    return {table: table_rows(conn, table) for table in TABLES}


def live_lines(path: Path) -> list[Line]:
    """A recording's lines as a live capture receives them: when Codex wrote them (a line without a
    time of its own arrives with the one before it)."""
    lines = []
    at = T0
    for line in fixture_lines(path):
        value = orjson.loads(line.data)
        kind, _ = classify(value)
        at = codex_time(kind, value) or at
        lines.append(Line(line.source, line.ordinal, at, line.data))
    return lines


def pieces(lines: Sequence[Line], cuts: Sequence[int]) -> list[list[Line]]:
    """`lines` cut before each index in `cuts`, each piece renumbered as its own stream."""
    bounds = [0, *sorted(set(cuts)), len(lines)]
    out = []
    for i, (start, end) in enumerate(itertools.pairwise(bounds)):
        source = f"piece-{i}"
        out.append([Line(source, n, line.received_at, line.data) for n, line in enumerate(lines[start:end])])
    return out


EXAMPLES = int(os.environ.get("SPLIT_EXAMPLES", "25"))
"""Splits tried per recording (more by hand: SPLIT_EXAMPLES=500)."""
FORK_MARKERS = (b'"forked_from_id":"', b'"forkedFromId":"')
"""How a fork names its parent (a session file's session_meta; app-server's thread objects)."""

STREAMS = sorted(
    path
    for path in FIXTURES.glob("codex-*/*/*.jsonl")
    if path.parent.name in ("app-server",) and path.stat().st_size < 2_000_000
) + sorted(path for path in FIXTURES.glob("codex-*/sessions/*/*.jsonl") if path.stat().st_size < 2_000_000)


def naming_lines(lines: Sequence[Line]) -> list[int]:
    """The positions of the lines that name their Codex thread."""
    found = []
    for i, line in enumerate(lines):
        value = orjson.loads(line.data)
        kind, method = classify(value)
        if revealed_thread(kind, method, value) is not None:
            found.append(i)
    return found


def test_streams_name_their_thread_often_enough_to_be_cut() -> None:
    """Where a cut may fall: a piece is filed with its thread once one of its lines names it. Codex
    0.169 names it on most app-server lines and a third of session-file lines; 0.63 session files
    only in `session_meta` (a process that starts inside one cannot know its thread)."""
    share = {path: len(naming_lines(fixture_lines(path))) / len(fixture_lines(path)) for path in STREAMS}
    assert all(share[p] > 0.25 for p in STREAMS if "0.169" in p.as_posix())
    assert all(len(naming_lines(fixture_lines(p))) == 1 for p in STREAMS if "0.63.0/sessions" in p.as_posix())


def comparable(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The store, minus what Codex 0.63's doubled protocol leaves to chance in a process that begins
    mid-stream: 0.63 sent each fact twice, as a legacy event and as a v2 notification that names no
    thread or turn. Until the second process has seen a legacy event it cannot tell the v2 copy is
    one, so that copy's raw line may be filed in another turn (or, with two threads on the
    connection, another thread), and a turn's reasoning may also be stored per section. Every fact
    table but reasoning is the same; Codex 0.169 streams are compared whole."""
    if "codex-0.63.0" in path.as_posix():
        del summary["events_raw"], summary["reasoning_sections"]
    return summary


@pytest.mark.parametrize("path", STREAMS, ids=[p.relative_to(FIXTURES).as_posix() for p in STREAMS])
def test_any_split_into_processes_gives_the_one_process_store(path: Path) -> None:
    lines = live_lines(path)
    naming = naming_lines(lines)
    if len(naming) < 2:
        pytest.skip("only one line names the thread: no piece but the first could be filed")
    if path.match("codex-0.63.0/app-server/two_threads.jsonl"):
        pytest.skip("0.63's v2 copies name no thread: with two threads, a piece cannot tell whose they are")
    if path.match("codex-0.169.0/app-server/subagent.jsonl"):
        pytest.skip(
            "a sub-agent's thread is never announced on the connection (no thread/started): its "
            "conversation gets the connection's model provider, which a process that begins later lacks"
        )
    if any(marker in line.data for line in lines for marker in FORK_MARKERS):
        pytest.skip(
            "a process that begins after a fork's first lines (session_meta, the thread/fork response) "
            "cannot know the thread is a fork: the link and the inherited usage come from the one that saw "
            "them (docs/operations.md, Forks)"
        )
    if "sessions" in path.parts and path.parent.name.endswith("-tools"):
        pytest.skip(
            "a session file's patch paths are relative to the session's cwd (session_meta, turn_context): "
            "a piece that begins after those lines stores them as written"
        )
    whole = comparable(path, summarize(rows(store(normalized(lines, "whole")))))

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.sampled_from(naming[1:]), max_size=4), st.data())
    def check(naming_cuts: list[int], data: st.DataObject) -> None:
        # Each piece holds a line naming the thread: cut anywhere after the previous such line.
        cuts = []
        for index in sorted(set(naming_cuts)):
            before = max(n for n in naming if n < index)
            cuts.append(data.draw(st.integers(before + 1, index)))
        split = pieces(lines, cuts)
        conn = store(*(normalized(piece, piece[0].source if piece else "empty") for piece in split))
        assert comparable(path, summarize(rows(conn))) == whole

    check()


FACT_TABLES = [table for table in TABLES if table != "events_raw"]


def _channels(mode: str, scenario: str) -> dict[str, list[list[Op]]]:
    """One 0.169 recording's two channels: the live stream and the session file(s) Codex wrote."""
    live = FIXTURES / f"codex-0.169.0/{mode}/{scenario}.jsonl"
    files = sorted((FIXTURES / f"codex-0.169.0/sessions/{mode}-{scenario}").glob("*.jsonl"))
    return {
        "live": [normalized(live_lines(live), f"live:{live.name}")],
        "file": [normalized(live_lines(path), f"file:{path.name}") for path in files],
    }


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


ORDERS = [("live", "file"), ("file", "live"), ("live", "file", "live", "file"), ("file", "file", "live")]
APP_SERVER = [
    "multi_turn",
    "command_outputs",
    "failed_turn",
    "interrupted_turn",
    "streamed_output",
    "two_threads",
    "forked_thread",
]


@pytest.mark.parametrize("scenario", APP_SERVER)
def test_a_thread_through_app_server_and_its_session_file_is_stored_once(scenario: str) -> None:
    channels = _channels("app-server", scenario)
    alone = {name: _counts(store(*ops)) for name, ops in channels.items()}
    richest = {table: max(counts[table] for counts in alone.values()) for table in FACT_TABLES}
    threads = alone["file"]["conversations"]
    for order in ORDERS:
        conn = store(*(ops for name in order for ops in channels[name]))
        counts = _counts(conn)
        assert {t: counts[t] for t in FACT_TABLES} == {t: min(counts[t], richest[t]) for t in FACT_TABLES}, (
            order
        )
        assert counts["conversations"] == threads  # one conversation per thread, whichever came first
        # Every row of a thread is in its one conversation.
        filed = dict(conn.execute("SELECT threadId, conversationId FROM threads").fetchall())
        turns = conn.execute("SELECT DISTINCT conversationId FROM turns").fetchall()
        assert {c for (c,) in turns} <= set(filed.values())


@pytest.mark.parametrize("scenario", APP_SERVER[:2])
def test_a_thread_stays_in_the_conversation_it_was_first_filed_under(scenario: str) -> None:
    """A producer filed the live stream under its chat (hello line); the session file, replayed
    later, names only the thread: its rows join the chat's conversation, not a second one."""
    live = FIXTURES / f"codex-0.169.0/app-server/{scenario}.jsonl"
    (session,) = sorted((FIXTURES / f"codex-0.169.0/sessions/app-server-{scenario}").glob("*.jsonl"))
    hello = Line("hello", 0, T0, b'{"type": "ingestor.hello", "conversationId": "chat-42"}')
    conn = store(
        normalized([hello, *live_lines(live)], "live"),
        normalized(live_lines(session), "file"),
        normalized(live_lines(live), "live-copy-without-hello"),
    )
    for table in ("conversations", "turns", "events_raw"):
        assert {c for (c,) in conn.execute(f"SELECT DISTINCT conversationId FROM {table}")} == {"chat-42"}
    # The saved copy of the live stream (without the hello line) added no raw event.
    alone = store(normalized([hello, *live_lines(live)], "live"), normalized(live_lines(session), "file"))
    assert _counts(conn) == _counts(alone)


EXEC = [
    "multi_turn",
    "command_outputs",
    "failed_turn",
    "streamed_output",
    "large_output",
    "resumed_run",
    "tools",
]


def _same_thread_rows(conn: sqlite3.Connection) -> None:
    """Every turn of the thread is in its one conversation, every fact in one of its turns."""
    filed = dict(conn.execute("SELECT threadId, conversationId FROM threads").fetchall())
    turns = {turn for (turn,) in conn.execute("SELECT turnId FROM turns")}
    assert {c for (c,) in conn.execute("SELECT DISTINCT conversationId FROM turns")} <= set(filed.values())
    for table in ("messages", "reasoning_sections", "commands", "usage_snapshots"):
        assert {t for (t,) in conn.execute(f"SELECT DISTINCT turnId FROM {table}")} <= turns, table


@pytest.mark.parametrize("scenario", EXEC)
def test_a_thread_through_exec_and_its_session_file_is_stored_once(scenario: str) -> None:
    """exec names no turns and restarts its item ids in every run: the store files each run as the
    thread's turn of the same ordinal and matches its calls by argv, so exec and the session file,
    in any order and twice, store no more rows than the session file alone (the richer channel)."""
    channels = _channels("exec", scenario)
    alone = {name: _counts(store(*ops)) for name, ops in channels.items()}
    assert alone["live"]["turns"] == alone["file"]["turns"] > 0
    for order in ORDERS:
        conn = store(*(ops for name in order for ops in channels[name]))
        counts = _counts(conn)
        assert {t: counts[t] for t in FACT_TABLES} == {t: alone["file"][t] for t in FACT_TABLES}, order
        _same_thread_rows(conn)
        # exec's item ids never reached the store as a turn or call of their own.
        assert not conn.execute("SELECT 1 FROM turns WHERE turnId LIKE '%/run:%'").fetchall()


def test_a_thread_through_exec_and_its_session_file_keeps_the_richer_facts() -> None:
    """The session file tells the user's prompts and the model's call ids, which exec does not:
    whichever channel came first, the thread has them (an exec call keeps the id it was stored under)."""
    channels = _channels("exec", "multi_turn")
    exec_first = store(*channels["live"], *channels["file"])
    file_first = store(*channels["file"], *channels["live"])
    for conn in (exec_first, file_first):
        users = conn.execute("SELECT content FROM messages WHERE role = 'user' ORDER BY createdAt").fetchall()
        assert [u for (u,) in users] == [
            "List the greeting file.",
            "Count to three.",
            "Say goodbye without using tools.",
        ]
        numbers = conn.execute("SELECT turnNumber FROM turns ORDER BY startedAt").fetchall()
        assert numbers == [(1,), (2,), (3,)]
    file_turns = [t for (t,) in file_first.execute("SELECT turnId FROM turns ORDER BY turnNumber")]
    assert all("/turn-" not in t for t in file_turns)  # Codex's own turn ids
    assert [c for (c,) in file_first.execute("SELECT callId FROM commands ORDER BY callId")] == [
        "call_multi_turn_001_1",
        "call_multi_turn_003_1",
    ]


def exec_runs(path: Path) -> list[list[Line]]:
    """An exec recording as each `codex exec` process printed it, each its own stream, read when
    `live_lines` reads them (exec lines carry no time)."""
    return [
        [Line(f"run-{n}", i, T0, line) for i, line in enumerate(run.splitlines())]
        for n, run in enumerate(exec_run_streams(path))
    ]


RESUMED = sorted(FIXTURES.glob("codex-*/exec/resumed_run.jsonl"))


@pytest.mark.parametrize("path", RESUMED, ids=[p.parent.parent.name for p in RESUMED])
def test_a_resumed_exec_run_piped_into_its_own_process_continues_the_thread(path: Path) -> None:
    """`codex exec --json` | ingestor run, then `codex exec resume <id> --json` | another ingestor
    run: the resumed run is the thread's second turn; either run replayed, in any order, lands in
    the turn it landed in before; the whole recording in one process makes the same store."""
    first, second = (normalized(run, run[0].source) for run in exec_runs(path))
    whole = rows(store(normalized(live_lines(path), "whole")))
    for order in ([first, second], [first, second, first], [first, second, second, first]):
        conn = store(*order)
        assert rows(conn) == whole
    turns = whole["turns"]
    assert [(t["turnNumber"], t["turnId"].rsplit("/", 1)[1]) for t in turns] == [(1, "turn-1"), (2, "turn-2")]
    by_turn = {m["turnId"].rsplit("/", 1)[1]: m["content"] for m in whole["messages"]}
    assert by_turn == {
        "turn-1": "The first run printed its marker.",
        "turn-2": "The resumed run printed its marker.",
    }


def test_a_resumed_exec_run_and_its_session_file_are_stored_once() -> None:
    """The two runs in their own processes, and the session file both runs appended to, in every
    order: no more rows than the session file alone, in its two turns."""
    path = FIXTURES / "codex-0.169.0/exec/resumed_run.jsonl"
    first, second = (normalized(run, run[0].source) for run in exec_runs(path))
    (session,) = sorted((FIXTURES / "codex-0.169.0/sessions/exec-resumed_run").glob("*.jsonl"))
    file = normalized(live_lines(session), "file")
    alone = _counts(store(file))
    for order in itertools.permutations([first, second, file]):
        if order.index(first) > order.index(second):
            continue  # a run met before the run that preceded it cannot know its place (documented)
        conn = store(*order)
        assert {t: _counts(conn)[t] for t in FACT_TABLES} == {t: alone[t] for t in FACT_TABLES}
        _same_thread_rows(conn)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("codex-0.63.0/sessions/*/*.jsonl"))[:6])
def test_a_repeated_cumulative_total_is_one_snapshot_wherever_it_falls(path: Path) -> None:
    """Codex 0.63 wrote each token_count twice, the second copy after the next turn's user message:
    the thread's cumulative totals, told again, are the same snapshot (not one in each turn)."""
    lines = fixture_lines(path)
    told = [
        line.data
        for line in lines
        if b'"type":"token_count"' in line.data and b'"total_token_usage"' in line.data
    ]
    totals = [orjson.loads(data)["payload"]["info"]["total_token_usage"] for data in told]
    snapshots = table_rows(store(normalized(lines, "file")), "usage_snapshots")
    assert len(snapshots) == len({orjson.dumps(t, option=orjson.OPT_SORT_KEYS) for t in totals})
    assert len(snapshots) < len(totals) or len(totals) <= 1


SESSION_FILES = sorted(FIXTURES.glob("codex-*/sessions/*/*.jsonl"))


def _as_sets(conn: sqlite3.Connection) -> dict[str, list[bytes]]:
    """Every table's rows, ids left out, in no particular order (transactions write upserts first)."""
    return {
        table: sorted(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) for row in table_rows(conn, table))
        for table in TABLES
    }


def test_a_sessions_archive_cut_into_transactions_anywhere_is_the_store_of_one_per_file() -> None:
    """A replay of many files commits transactions that begin and end anywhere: inside a file, or
    holding the ends and starts of several (a file's end is no batch cut: ingestor/batch.py)."""
    per_file = [normalized(live_lines(path), f"file:{path}") for path in SESSION_FILES]
    expected = _as_sets(store(*per_file))
    everything = [op for ops in per_file for op in ops]
    assert _as_sets(store(everything)) == expected

    @settings(max_examples=max(5, EXAMPLES // 3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.integers(1, len(everything) - 1), max_size=12))
    def check(cuts: list[int]) -> None:
        bounds = [0, *sorted(set(cuts)), len(everything)]
        conn = store(*(everything[start:end] for start, end in itertools.pairwise(bounds)))
        assert _as_sets(conn) == expected
        apply_ops(conn, everything)  # and a second replay stores nothing new
        assert _as_sets(conn) == expected

    check()
