"""The embedded store: schema, the merge rules applied in SQL, idempotency, rejections."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.sinks.sqlite.apply import apply_batches, apply_ops
from ingestor.sinks.sqlite.history import command_output, open_sqlite_history
from ingestor.sinks.sqlite.sink import CHECKPOINT_EVERY_BATCHES, connect, open_sqlite_sink
from tests.helpers.sqlite_ops import T0, conversation_ops, op

TABLES = (
    "conversations",
    "turns",
    "messages",
    "reasoning_sections",
    "commands",
    "command_chunks",
    "usage_snapshots",
    "rate_limits",
    "events_raw",
    "work_orders",
)


def dump(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES}


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return connect(tmp_path / "store.db")


def test_schema_mirrors_convex_names_and_is_readable(conn: sqlite3.Connection) -> None:
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    columns = [row[1] for row in conn.execute("PRAGMA table_info(commands)")]
    assert columns[:4] == ["id", "callId", "turnId", "command"]
    indexes = {row[1]: row[2] for row in conn.execute("PRAGMA index_list(events_raw)")}
    assert indexes["events_raw_by_key"] == 1  # unique
    chunk_indexes = {row[1]: row[2] for row in conn.execute("PRAGMA index_list(command_chunks)")}
    assert chunk_indexes["command_chunks_by_callId_stream_seq"] == 1
    schema = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'commands'").fetchone()[0]
    assert "command TEXT NOT NULL, -- JSON array of strings" in schema


def test_a_conversation_is_stored_with_the_merge_rules(conn: sqlite3.Connection) -> None:
    outcome = apply_ops(conn, conversation_ops())
    assert outcome.counts == {"inserted": 13, "updated": 3}
    assert outcome.rejected == []
    turn = conn.execute("SELECT status, startedAt, endedAt, model FROM turns").fetchall()
    assert turn == [("succeeded", T0 + 1, T0 + 11, "gpt-5")]
    command = conn.execute(
        "SELECT command, status, exitCode, durationMs, chunked, parsedCmd, startedAt FROM commands"
    ).fetchall()
    assert command == [('["ls","-l"]', "completed", 0, 12.5, 1, '{"$k":1}', T0 + 4)]
    assert conn.execute("SELECT startedAt, lastSeenAt, threadId FROM conversations").fetchall() == [
        (T0, T0 + 11, "th-1")
    ]
    # `<column>Json` text lands in the column itself, exactly as sent (a 30-digit integer survives).
    raw = conn.execute("SELECT rawContent FROM messages WHERE key LIKE 'm2@%'").fetchone()[0]
    assert raw == '{"n":123456789012345678901234567890}'
    assert conn.execute("SELECT payload FROM events_raw").fetchone()[0] == '{"params":{"n":1}}'


def test_replaying_the_same_ops_changes_nothing(conn: sqlite3.Connection) -> None:
    apply_ops(conn, conversation_ops())
    before = dump(conn)
    outcome = apply_ops(conn, conversation_ops())
    assert dump(conn) == before
    assert set(outcome.counts) == {"duplicate"}
    # Also one op at a time, in a different batching.
    for single in conversation_ops():
        apply_ops(conn, [single])
    assert dump(conn) == before


def test_a_chunk_is_unique_per_call_stream_and_seq_even_under_another_key(conn: sqlite3.Connection) -> None:
    chunk = {"callId": "c", "stream": "stdout", "seq": 0, "chunkBase64": "YQ==", "createdAt": 1}
    outcome = apply_ops(
        conn, [op("appendCommandChunk", "k1", **chunk), op("appendCommandChunk", "k2", **chunk)]
    )
    assert outcome.counts == {"inserted": 1, "duplicate": 1}
    assert conn.execute("SELECT count(*) FROM command_chunks").fetchone() == (1,)


def test_rejected_ops_do_not_stop_the_batch(conn: sqlite3.Connection) -> None:
    good = op("appendMessage", "ok", turnId="t", role="user", content="hi", createdAt=1)
    outcome = apply_ops(
        conn,
        [
            op("appendMessage", "a", turnId="t", role="user", content={"not": "text"}, createdAt=1),
            op("appendMessage", "b", turnId="t", role="user", createdAt=1),
            op("appendMessage", "c", turnId="t", role="user", content="x", createdAt=1, color="red"),
            op("upsertTurn", "d", conversationId="c", startedAt=1),
            op("upsertTurn", "e", turnId="t", startedAt=1),
            op("appendEvent", "f", conversationId="c", method="m", payload={}, receivedAt=2**70),
            op("dropTable", "g"),  # type: ignore[arg-type]
            good,
        ],
    )
    reasons = [reason for _, reason in outcome.rejected]
    assert outcome.counts == {"rejected": 7, "inserted": 1}
    assert reasons == [
        "content: expected text, got dict",
        "missing required column(s) content",
        "unknown column 'color' for messages",
        "missing turnId",
        "missing required column(s) conversationId",
        "receivedAt: integer beyond 64 bits",
        "unknown operation 'dropTable'",
    ]
    assert conn.execute("SELECT key FROM messages").fetchall() == [("ok@t",)]  # scoped by its turn


def test_json_null_payload_is_kept(conn: sqlite3.Connection) -> None:
    apply_ops(conn, [op("appendEvent", "n", conversationId="c", method="m", payload=None, receivedAt=1)])
    assert conn.execute("SELECT payload FROM events_raw").fetchone() == ("null",)


def test_command_output_without_chunks_is_its_own_output_else_the_merged_one() -> None:
    own = {"callId": "c", "stdout": "out", "stderr": "err", "aggregatedOutput": "outerr", "command": ["x"]}
    assert command_output("c", own, []) == {
        "callId": "c",
        "chunkCount": 0,
        "stdout": "out",
        "stderr": "err",
        "call": {"command": ["x"]},
        "aggregatedOutput": "outerr",
    }
    merged_only = {"callId": "c", "aggregatedOutput": "outerr", "source": "mcp", "parsedCmd": {"tool": "t"}}
    assert command_output("c", merged_only, []) == {
        "callId": "c",
        "chunkCount": 0,
        "stdout": "outerr",
        "stderr": "",
        "call": {"source": "mcp", "parsedCmd": {"tool": "t"}},
        "aggregatedOutput": "outerr",
        "merged": True,
    }
    nothing = {"callId": "c", "chunkCount": 0, "stdout": "", "stderr": "", "call": {}}
    assert command_output("c", {"callId": "c"}, []) == nothing


@pytest.mark.anyio
async def test_sink_and_history_reader_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with open_sqlite_sink(path) as sink:
        await sink.write(conversation_ops()[:8])
        await sink.write(conversation_ops()[8:])
    assert sink.counts["rejected"] == 0
    async with open_sqlite_history(path) as history:
        conversation = await history.get_conversation("conv-1")
        assert conversation is not None
        assert [t["turnId"] for t in conversation["turns"]] == ["turn-1"]
        turn = await history.get_turn("turn-1")
        assert turn is not None
        assert set(turn) == {
            "turn",
            "messages",
            "reasoningSections",
            "commands",
            "usageSnapshots",
            "rateLimits",
        }
        assert turn["commands"][0]["command"] == ["ls", "-l"]
        assert turn["commands"][0]["chunked"] is True
        # Values Convex cannot hold come back as their untouched JSON text, as history:getTurn gives them.
        assert turn["commands"][0]["parsedCmdJson"] == '{"$k":1}'
        assert turn["messages"][1]["rawContentJson"] == '{"n":123456789012345678901234567890}'
        assert "parsedCmd" not in turn["commands"][0] and "rawContent" not in turn["messages"][1]
        assert turn["reasoningSections"][0]["summaryText"] == ["Plan", "Run ls"]
        assert turn["rateLimits"][1]["hasCredits"] is True
        output = await history.get_command_output("call-1")
        assert output == {
            "callId": "call-1",
            "chunkCount": 3,
            "stdout": "a.txt\nb.txt\n",
            "stderr": "warn \ufffd",
            "call": {"command": ["ls", "-l"], "parsedCmdJson": '{"$k":1}'},
            "aggregatedOutput": "a.txt\nb.txt\n",
        }
        events = await history.list_events("conv-1")
        assert [e["method"] for e in events] == ["turn/started"]
        assert await history.get_turn("nope") is None
        assert await history.get_command_output("nope") is None
        assert await history.list_events("nope") == []


@pytest.mark.anyio
async def test_reasoning_sections_come_in_position_order_then_arrival(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    sections = [
        op("appendReasoningSection", key, turnId="t", itemId=key, createdAt=created, **extra)
        for key, created, extra in (
            ("late", 1, {}),
            ("second", 2, {"position": 1}),
            ("first", 3, {"position": 0}),
        )
    ]
    turn = op("upsertTurn", "t", turnId="t", conversationId="c", startedAt=0)
    async with open_sqlite_sink(path) as sink:
        await sink.write([turn, *sections])
    async with open_sqlite_history(path) as history:
        found = await history.get_turn("t")
    assert found is not None
    assert [s["itemId"] for s in found["reasoningSections"]] == ["first", "second", "late"]


@pytest.mark.anyio
async def test_background_checkpoints_keep_every_batch(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    batches = 3 * CHECKPOINT_EVERY_BATCHES
    async with open_sqlite_sink(path) as sink:
        for i in range(batches):
            await sink.write(
                [op("appendEvent", f"e{i}", conversationId="c", method="m", payload=i, receivedAt=i)]
            )
        await anyio.sleep(0.05)  # let a checkpoint run beside the writes
    assert not (tmp_path / "store.db-wal").exists()  # closing checkpointed everything
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT count(*), sum(payload) FROM events_raw").fetchone()
    assert stored == (batches, sum(range(batches)))


def test_several_batches_in_one_transaction_equal_one_transaction_each(tmp_path: Path) -> None:
    ops = conversation_ops()
    batches = [ops[i : i + 3] for i in range(0, len(ops), 3)]
    one_each, together = connect(tmp_path / "a.db"), connect(tmp_path / "b.db")
    counts: Counter[str] = Counter()
    for batch in batches:
        counts.update(apply_ops(one_each, batch).counts)
    assert apply_batches(together, batches).counts == counts
    assert dump(together) == dump(one_each)  # the same rows, with the same ids


def test_a_raw_event_keeps_its_line_exactly_as_written(conn: sqlite3.Connection) -> None:
    """The payload of an event is its whole line: the store keeps the line's own JSON text (spacing,
    escapes, number spelling), not a re-encoding of the parsed value."""
    data = b'{"method": "x/y", "params": {"t": "caf\\u00e9", "n": 1.50, "big": -9223372036854775809}}'
    normalizer = Normalizer("t", conversation_id="c")
    ops = normalizer.feed(Line("t", 0, T0, data)) + normalizer.finish()
    (event,) = [o for o in ops if o["op"] == "appendEvent"]
    assert event["args"] == {
        "conversationId": "c",
        "method": "x/y",
        "payload": orjson.loads(data),
        "receivedAt": T0,
    }
    assert orjson.loads(orjson.dumps(event)) == orjson.loads(
        orjson.dumps({**event, "args": dict(event["args"])})
    )
    apply_ops(conn, [event])
    (stored,) = conn.execute("SELECT payload FROM events_raw").fetchone()
    assert stored == data.decode()
    assert json.loads(stored)["params"]["big"] == -9223372036854775809  # exact, unlike the parsed float
    # A payload replaced after the fact is encoded as usual: the remembered text is no longer its own.
    event["args"]["payload"] = {"other": True}
    event["key"] = "e:other"
    apply_ops(conn, [event])
    assert conn.execute("SELECT payload FROM events_raw WHERE key = 'e:other'").fetchone() == (
        '{"other":true}',
    )


def test_a_new_store_is_its_owners_only_whatever_the_umask(tmp_path: Path) -> None:
    """It holds prompts, code and command output (docs/security.md)."""
    path = tmp_path / "store.db"
    old = os.umask(0)
    try:
        conn = connect(path)
        apply_ops(
            conn,
            [
                {
                    "op": "appendEvent",
                    "key": "e:1",
                    "args": {"conversationId": "c", "method": "m", "payload": 1, "receivedAt": 1},
                }
            ],
        )
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        conn.close()
    finally:
        os.umask(old)
    assert modes == {name: 0o600 for name in modes} and "store.db-wal" in modes
