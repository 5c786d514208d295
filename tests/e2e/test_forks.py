"""A forked Codex thread (app-server `thread/fork`, recorded from Codex 0.169): its own conversation,
linked to its parent, holding only its own turns; its usage totals, which go on from its parent's, are
counted once by subtracting what it inherited (docs/operations.md, "Forks")."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.ops import Op
from ingestor.sinks.sqlite.apply import apply_ops
from ingestor.sinks.sqlite.history import open_sqlite_history
from ingestor.sinks.sqlite.merge import merge_value
from ingestor.sinks.sqlite.schema import TABLES
from ingestor.sinks.sqlite.sink import connect
from tests.golden.store import FIXTURES, fixture_lines, normalize_fixture, table_rows

SCENARIO = "forked_thread"
LIVE = FIXTURES / f"codex-0.169.0/app-server/{SCENARIO}.jsonl"
FILES = sorted((FIXTURES / f"codex-0.169.0/sessions/app-server-{SCENARIO}").glob("*.jsonl"))
COLUMNS = ("totalInputTokens", "cachedInputTokens", "outputTokens", "reasoningOutputTokens")

CHANNELS: dict[str, list[Path]] = {
    "live": [LIVE],
    "session files": FILES,
    "live, then session files": [LIVE, *FILES],
    "session files, then live": [*FILES, LIVE],
}


def facts() -> dict[str, Any]:
    """What the recording script says (testing/codex/record.py), never read back from the recording."""
    entries = orjson.loads((FIXTURES / "manifest.json").read_bytes())["files"]
    [entry] = [e for e in entries if e["scenario"] == SCENARIO and e["kind"] == "stream"]
    found: dict[str, Any] = entry["facts"]
    return found


def call_usage(usage: dict[str, Any]) -> list[int]:
    """A model call's usage as the scripted model server reported it (the Responses API's shape)."""
    return [
        usage["input_tokens"],
        usage["input_tokens_details"]["cached_tokens"],
        usage["output_tokens"],
        usage["output_tokens_details"]["reasoning_tokens"],
    ]


def stored(paths: list[Path]) -> sqlite3.Connection:
    conn = connect(":memory:")
    for path in paths:
        ops: list[Op] = normalize_fixture(path)
        apply_ops(conn, ops)
    return conn


def thread_ids() -> tuple[str, str]:
    """(parent, fork): the recording's two thread ids, in the order the threads began."""
    parent, fork = (orjson.loads(fixture_lines(path)[0].data)["payload"]["id"] for path in FILES)
    return parent, fork


def test_the_recording_is_a_fork() -> None:
    assert facts()["forked_from_by_thread"] == [None, 0]
    assert len(FILES) == 2  # the fork's session file is its own, and starts with its own session_meta
    parent, _ = thread_ids()
    fork_lines = fixture_lines(FILES[1])
    assert orjson.loads(fork_lines[0].data)["payload"]["forked_from_id"] == parent
    assert not any(parent.encode() in line.data for line in fork_lines[1:]), (
        "the parent's lines are not copied"
    )


@pytest.mark.parametrize("channels", CHANNELS.values(), ids=CHANNELS.keys())
def test_the_fork_is_its_own_conversation_linked_to_its_parent(channels: list[Path]) -> None:
    parent, fork = thread_ids()
    conn = stored(channels)
    conversations = {c["conversationId"]: c for c in table_rows(conn, "conversations")}
    assert set(conversations) == {parent, fork}
    assert "forkedFromThreadId" not in conversations[parent]
    assert conversations[fork]["forkedFromThreadId"] == parent
    # Only the fork's own turn and message are filed under it: none of the parent's is copied.
    turns = sorted(table_rows(conn, "turns"), key=lambda turn: turn["startedAt"])
    prompts = [turn["prompt"] for turn in facts()["turns"]]
    assert [t["conversationId"] for t in turns] == [parent, fork, parent]
    messages = {m["content"]: m["turnId"] for m in table_rows(conn, "messages") if m["role"] == "user"}
    assert {turn["conversationId"] for turn in turns if turn["turnId"] == messages[prompts[1]]} == {fork}
    assert len(messages) == len(prompts)


@pytest.mark.parametrize("channels", CHANNELS.values(), ids=CHANNELS.keys())
def test_usage_counted_as_the_docs_say_counts_the_parents_tokens_once(channels: list[Path]) -> None:
    script = facts()
    calls = [call_usage(call["usage"]) for turn in script["turns"] for call in turn["model_calls"]]
    spent = [sum(column) for column in zip(*calls, strict=True)]
    conn = stored(channels)
    conversations = {c["conversationId"]: c for c in table_rows(conn, "conversations")}
    latest: dict[str, list[int]] = {}
    for usage in table_rows(conn, "usage_snapshots"):  # in the order stored; totals only grow
        conversation = conn.execute(
            "SELECT conversationId FROM turns WHERE turnId = ?", (usage["turnId"],)
        ).fetchone()[0]
        totals = [usage[column] for column in COLUMNS]
        latest[conversation] = max(latest.get(conversation, totals), totals)
    # The reader's rule: a conversation's own usage is its latest totals less what it inherited.
    own = {
        conversation: [
            total - orjson.loads(conversations[conversation].get("forkedFromUsage", "{}")).get(column, 0)
            for total, column in zip(totals, COLUMNS, strict=True)
        ]
        for conversation, totals in latest.items()
    }
    assert [sum(column) for column in zip(*own.values(), strict=True)] == spent
    # Naively summed, the parent's tokens at the fork would count twice.
    assert [sum(column) for column in zip(*latest.values(), strict=True)] != spent
    _, fork = thread_ids()
    inherited = orjson.loads(conversations[fork]["forkedFromUsage"])
    before_fork = [call_usage(call["usage"]) for call in script["turns"][0]["model_calls"]]
    assert [inherited[column] for column in COLUMNS] == [sum(c) for c in zip(*before_fork, strict=True)]


def test_the_parents_totals_told_again_on_the_fork_are_no_snapshot_of_the_parents_turn() -> None:
    """app-server repeats the parent's totals on the new fork, naming the parent's last turn."""
    conn = stored([LIVE])
    parent, _ = thread_ids()
    parent_turns = {t["turnId"] for t in table_rows(conn, "turns") if t["conversationId"] == parent}
    parent_snapshots = [u for u in table_rows(conn, "usage_snapshots") if u["turnId"] in parent_turns]
    parent_calls = [c for turn in facts()["turns"] if turn["thread_index"] == 0 for c in turn["model_calls"]]
    assert len(parent_snapshots) == len(parent_calls)  # one per model call of the parent, no more


def test_a_forks_inherited_usage_is_kept_as_first_told() -> None:
    first, later = '{"totalTokens":2355}', '{"totalTokens":3690}'
    assert merge_value("conversations", "forkedFromUsage", first, later) == first
    assert merge_value("conversations", "forkedFromThreadId", "a", "b") == "b"  # rule 5, as any column


def old_store(path: Path) -> None:
    """A store as the version before forks made it: `conversations` without the fork columns."""
    connect(path).close()
    with sqlite3.connect(path) as old:
        old.execute("ALTER TABLE conversations DROP COLUMN forkedFromThreadId")
        old.execute("ALTER TABLE conversations DROP COLUMN forkedFromUsage")
        old.execute("INSERT INTO conversations (conversationId, startedAt, lastSeenAt) VALUES ('old', 1, 2)")
    old.close()


@pytest.mark.anyio
async def test_show_reads_a_store_made_before_forks(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_store(path)
    connect(path, read_only=True).close()  # a reader adds nothing
    async with open_sqlite_history(path) as history:
        found = await history.get_conversation("old")
    assert found is not None
    assert found["conversation"] == {"conversationId": "old", "startedAt": 1, "lastSeenAt": 2}


def test_a_store_made_before_forks_gets_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_store(path)
    conn = connect(path)
    apply_ops(conn, normalize_fixture(FILES[1]))
    columns = [row[1] for row in conn.execute("PRAGMA table_info(conversations)")]
    assert columns == ["id", *TABLES["conversations"].column_names]
    parent, fork = thread_ids()
    linked = conn.execute(
        "SELECT conversationId, forkedFromThreadId FROM conversations ORDER BY id"
    ).fetchall()
    assert linked == [("old", None), (fork, parent)]


SUBAGENT = "subagent"
SUBAGENT_FILES = sorted((FIXTURES / f"codex-0.169.0/sessions/app-server-{SUBAGENT}").glob("*.jsonl"))


def subagent_facts() -> dict[str, Any]:
    entries = orjson.loads((FIXTURES / "manifest.json").read_bytes())["files"]
    [entry] = [e for e in entries if e["scenario"] == SUBAGENT and e["kind"] == "stream"]
    found: dict[str, Any] = entry["facts"]
    return found


@pytest.mark.parametrize("order", [1, -1], ids=["parent first", "sub-agent first"])
def test_a_sub_agent_spawned_with_its_parents_history_copies_none_of_its_facts(order: int) -> None:
    """Its session file begins with the parent's session_meta and turn, copied (fork_context)."""
    parent_file, child_file = SUBAGENT_FILES
    parent = orjson.loads(fixture_lines(parent_file)[0].data)["payload"]["id"]
    child_lines = fixture_lines(child_file)
    assert orjson.loads(child_lines[1].data)["payload"]["id"] == parent, "the recording copies the parent"
    conn = stored(SUBAGENT_FILES[::order])
    script = subagent_facts()["turns"]
    turns = {t["turnId"]: t["conversationId"] for t in table_rows(conn, "turns")}
    prompts = {m["content"]: turns[m["turnId"]] for m in table_rows(conn, "messages") if m["role"] == "user"}
    child = next(
        c["conversationId"] for c in table_rows(conn, "conversations") if c["conversationId"] != parent
    )
    assert prompts == {script[0]["prompt"]: parent, script[1]["prompt"]: child}
    assert sorted(turns.values()) == sorted([parent, child])  # one turn each, none moved
    conversations = {c["conversationId"]: c for c in table_rows(conn, "conversations")}
    assert conversations[child]["forkedFromThreadId"] == parent
    inherited = orjson.loads(conversations[child]["forkedFromUsage"])
    assert set(inherited.values()) == {0}  # a sub-agent's usage starts from zero


def test_a_sub_agent_spawned_without_its_parents_history_is_linked_by_its_spawn() -> None:
    """Without fork_context Codex writes no `forked_from_id`, only the spawn's `parent_thread_id`: the
    real sub-agent file, its session_meta without `forked_from_id`, is linked all the same, its usage
    counted from zero."""
    parent_file, child_file = SUBAGENT_FILES
    parent = orjson.loads(fixture_lines(parent_file)[0].data)["payload"]["id"]
    meta, *rest = fixture_lines(child_file)
    record = orjson.loads(meta.data)
    assert record["payload"].pop("forked_from_id") == parent
    assert record["payload"]["source"]["subagent"]["thread_spawn"]["parent_thread_id"] == parent
    normalizer = Normalizer(meta.source)
    ops = [
        op
        for line in (Line(meta.source, 0, meta.received_at, orjson.dumps(record)), *rest)
        for op in normalizer.feed(line)
    ]
    conn = stored([parent_file])
    apply_ops(conn, [*ops, *normalizer.finish()])
    child = next(c for c in table_rows(conn, "conversations") if c["conversationId"] != parent)
    assert child["forkedFromThreadId"] == parent
    assert set(orjson.loads(child["forkedFromUsage"]).values()) == {0}
