"""Store parity: the same recordings replayed into SQLite and into Convex read back the same.

Real Codex recordings from fixtures/ (plus two streams derived from them that reach the paths the
recordings do not: values Convex cannot hold, values spilled to `blobs`, invalid UTF-8 split across
output chunks) are replayed with `ingestor replay` into an embedded SQLite store and into the local
Convex stand-in, then every conversation, turn, command output and event list is read back through
the daemon's own readers (`SqliteHistory`, `ConvexHistory`, and `ingestor show --json` for some)
and compared exactly: the same keys, values, JSON types (`11` is not `11.0`) and order. The only
fields removed are Convex's system fields `_id` and `_creationTime` (the SQLite reader shows no
`id`). Replaying everything a second time must change neither store.

Lines without a time of their own are stamped with the wall clock when read (`pipeline.now_ms`), so
each replay runs with a deterministic clock instead (`_CLOCK`): same file, same times, in both
stores and in both passes, so `receivedAt`/`lastSeenAt` etc. are compared too, not masked.

The unit tests at the end pin the two fixes this test found, on the SQLite reader's side.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import pytest

from ingestor.cli import usage
from ingestor.cli.conversations import Filters, list_conversations
from ingestor.cli.export import gather
from ingestor.sinks.base import HistoryReader, json_numbers
from ingestor.sinks.convex.dead_letter import DEAD_LETTER_FILE
from ingestor.sinks.convex.deployment import ConvexOptions
from ingestor.sinks.convex.factory import open_history_from_env
from ingestor.sinks.sqlite.history import open_sqlite_history, present_any
from ingestor.sinks.sqlite.schema import TABLES
from ingestor.sinks.sqlite.sink import connect
from tests.helpers.convex_e2e import INGESTOR, REPO, daemon_env, ingestor_argv, log_events
from tests.helpers.convex_local import ConvexLocal

FIXTURES: Final = REPO / "fixtures"

# Small, varied recordings (not large_output: the stand-in's index scans are linear). A stream and
# the session file of the same thread go to the same conversation: the stores merge two sources.
RECORDINGS: Final = (
    "codex-0.169.0/app-server/multi_turn.jsonl",
    "codex-0.169.0/sessions/app-server-multi_turn",
    "codex-0.169.0/app-server/command_outputs.jsonl",
    "codex-0.169.0/app-server/interrupted_turn.jsonl",
    "codex-0.169.0/app-server/streamed_output.jsonl",
    "codex-0.169.0/exec/failed_turn.jsonl",
    "codex-0.169.0/sessions/exec-failed_turn",
    "codex-0.63.0/app-server/command_outputs.jsonl",
    "codex-0.63.0/app-server/failed_turn.jsonl",
    "codex-0.63.0/app-server/two_threads.jsonl",
    "codex-0.63.0/sessions/app-server-two_threads",
    "codex-0.63.0/exec/multi_turn.jsonl",
    # Every tool kind (file changes, MCP calls with keys Convex forbids, web searches), live and
    # from session files of both versions.
    "codex-0.169.0/app-server/tools.jsonl",
    "codex-0.169.0/sessions/app-server-tools",
    "codex-0.169.0/exec/tools.jsonl",
    "codex-0.169.0/sessions/exec-tools",  # the same thread: a moved file and a plan told by both
    "codex-0.63.0/app-server/tools.jsonl",
    "codex-0.63.0/sessions/exec-tools",
    # A fork and a sub-agent, live and from their session files: `usage` counts from the stored link.
    "codex-0.169.0/app-server/forked_thread.jsonl",
    "codex-0.169.0/sessions/app-server-forked_thread",
    "codex-0.169.0/app-server/subagent.jsonl",
    "codex-0.169.0/sessions/app-server-subagent",
)

# Convex's system fields: assigned by Convex, no counterpart in the SQLite reader's rows. Nothing
# else is removed before comparing.
CONVEX_SYSTEM_FIELDS: Final = frozenset({"_id", "_creationTime"})

# `ingestor replay` with `pipeline.now_ms` replaced by a counter: one tick (1 s) per read.
_CLOCK: Final = (
    "import itertools, sys\n"
    "import ingestor.pipeline as pipeline\n"
    "assert callable(getattr(pipeline, 'now_ms', None)), 'ingestor.pipeline.now_ms is gone: update _CLOCK'\n"
    "ticks = itertools.count(1795300000000, 1000)\n"
    "pipeline.now_ms = lambda: next(ticks)\n"
    "from ingestor.cli.commands import main\n"
    "sys.argv[0] = 'ingestor'\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)
REPLAY: Final = [sys.executable, "-c", _CLOCK, "replay"]


def _recording_files() -> list[Path]:
    files: list[Path] = []
    for name in RECORDINGS:
        path = FIXTURES / name
        found = sorted(path.glob("rollout-*.jsonl")) if path.is_dir() else [path]
        assert found and all(f.is_file() for f in found), f"fixture missing: {name}"
        files.extend(found)
    return files


def _rename(text: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        text = text.replace(old, new)
    return text


def _synthetic_v2(directory: Path) -> Path:
    """0.169 multi_turn with new ids, a 120 KiB assistant message, a 75 KiB reasoning summary and a
    90 KiB command output (spilled to `blobs` in Convex), and events whose payloads Convex cannot
    hold as is (one of them large)."""
    lines = _rename(
        (FIXTURES / "codex-0.169.0/app-server/multi_turn.jsonl").read_text(),
        {"01a2014c-": "5e1f0001-", "call_multi_turn_": "call_synthetic_v2_", "msg_resp_": "msg_synthetic_"},
    ).splitlines()
    out: list[str] = []
    for line in lines:
        event = json.loads(line)
        item = event.get("params", {}).get("item", {})
        if event.get("method") == "item/completed" and item.get("type") == "agentMessage":
            item["text"] = "déjà vu — 😀 naïve " * 6000 + item["text"]
        if event.get("method") == "item/completed" and item.get("type") == "reasoning":
            item["summary"] = [*item["summary"], "ünïcödé reasoning, at length. " * 2500]
        if event.get("method") == "item/completed" and item.get("type") == "commandExecution":
            item["aggregatedOutput"] = "".join(f"line {i}: ünïcödé\n" for i in range(4000))
        out.append(json.dumps(event, ensure_ascii=False))
        if event.get("method") == "item/completed" and item.get("type") == "agentMessage":
            ids = {"threadId": event["params"]["threadId"], "turnId": event["params"]["turnId"]}
            deep: Any = "bottom"
            for _ in range(20):
                deep = {"d": deep}
            numbers = [11.0, 0.5, -0.0, 1e300, 2e20, 1.5e-7, 2**53, 12345678901234567890]
            probes = [
                # Unsafe for Convex: a `$` key, a non-ASCII key, an integer past 2^53, too deep.
                {"method": "probe/unsafeKeys", "params": {**ids, "$ref": "#/x", "café": 11.0}},
                {"method": "probe/bigInteger", "params": {**ids, "big": 2**70, "numbers": numbers}},
                {"method": "probe/deep", "params": {**ids, "deep": deep}},
                # Unsafe and over 64 KiB: its `payloadJson` text is spilled to `blobs` in Convex.
                {"method": "probe/largeUnsafe", "params": {**ids, "$schema": "x" * 100_000}},
                # Safe, but with floats written as `11.0` and integers Convex returns in plain digits.
                {"method": "probe/numbers", "params": {**ids, "numbers": numbers[:-1]}},
            ]
            out.extend(json.dumps(probe, ensure_ascii=False) for probe in probes)
    path = directory / "synthetic-0.169.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


def _synthetic_legacy(directory: Path) -> Path:
    """0.63 streamed_output with new ids and its legacy base64 chunks replaced by bytes whose UTF-8
    sequences are split across chunks or invalid."""
    chunks = iter([b"caf\xc3", b"\xa9 \xe2\x82", b"\xac \xff\xfe \xed\xa0\x80 \xf0\x9f"])
    lines = _rename(
        (FIXTURES / "codex-0.63.0/app-server/streamed_output.jsonl").read_text(),
        {
            "01a2014d-": "5e1f0002-",
            "call_streamed_output_": "call_synthetic_legacy_",
            "msg_resp_": "msg_synthetic_",
        },
    ).splitlines()
    out: list[str] = []
    replaced = 0
    for line in lines:
        event = json.loads(line)
        msg = event.get("params", {}).get("msg", {})
        if msg.get("type") == "exec_command_output_delta":
            data = next(chunks, b"\x98\x80 end\n")
            msg["chunk"] = base64.b64encode(data).decode()
            replaced += 1
        out.append(json.dumps(event, ensure_ascii=False))
    assert replaced >= 3, "the legacy fixture no longer has output deltas"
    path = directory / "synthetic-0.63.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


def _replay(files: list[Path], sink_args: list[str], env: dict[str, str]) -> None:
    """Each file in its own `ingestor replay` (one clock per file, so both stores see the same)."""
    for path in files:
        result = subprocess.run([*REPLAY, str(path), *sink_args], env=env, capture_output=True, timeout=120)
        stderr = result.stderr.decode(errors="replace")
        assert result.returncode == 0, f"{path}: {stderr[-4000:]}"
        rejected = [e for e in log_events(result.stderr) if e.get("event") == "op rejected"]
        assert not rejected, f"{path}: {rejected}"


def _ids(files: list[Path], env: dict[str, str]) -> dict[str, set[str]]:
    """Every conversation, turn and command id in the operations (from neither store)."""
    ids: dict[str, set[str]] = {"conversationId": set(), "turnId": set(), "callId": set()}
    result = subprocess.run(
        [*INGESTOR, "replay", *map(str, files), "--sink=jsonl:-"], env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    for line in result.stdout.splitlines():
        args = json.loads(line)["args"]
        for name, found in ids.items():
            # An exec run's ids (`<thread>/run:<hash>...`) are the daemon's names for the turn and
            # calls the store files the run in (docs/operations.md): `_stored_ids` adds those.
            if isinstance(args.get(name), str) and "/run:" not in args[name]:
                found.add(args[name])
    return ids


def _stored_ids(database: Path) -> dict[str, set[str]]:
    """The turn and call ids the store chose (an exec run's `<thread>/turn-<n>` and its calls)."""
    conn = connect(database, read_only=True)
    try:
        return {
            "turnId": {t for (t,) in conn.execute("SELECT turnId FROM turns")},
            "callId": {c for (c,) in conn.execute("SELECT callId FROM commands")},
        }
    finally:
        conn.close()


async def _read_all(reader: HistoryReader, ids: dict[str, set[str]]) -> dict[str, Any]:
    """Everything the reader returns for these ids, keyed by query and id."""
    out: dict[str, Any] = {}
    for conversation_id in sorted(ids["conversationId"]):
        out[f"conversation {conversation_id}"] = await reader.get_conversation(conversation_id)
        out[f"events {conversation_id}"] = await reader.list_events(conversation_id)
    for turn_id in sorted(ids["turnId"]):
        out[f"turn {turn_id}"] = await reader.get_turn(turn_id)
    for call_id in sorted(ids["callId"]):
        out[f"command {call_id}"] = await reader.get_command_output(call_id)
    return out


def read_sqlite(path: Path, ids: dict[str, set[str]]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with open_sqlite_history(path) as reader:
            return await _read_all(reader, ids)

    return anyio.run(main)


def read_convex(url: str, env: dict[str, str], ids: dict[str, set[str]]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with open_history_from_env(env, ConvexOptions(url=url)) as reader:
            return await _read_all(reader, ids)

    return anyio.run(main)


def without_system_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_system_fields(v) for k, v in value.items() if k not in CONVEX_SYSTEM_FIELDS}
    if isinstance(value, list):
        return [without_system_fields(v) for v in value]
    return value


def canonical(value: Any) -> str:
    """JSON text that tells `11` from `11.0` and keeps list order (object key order is not data)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1)


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{path or '.'}: {type(a).__name__} {a!r:.200} != {type(b).__name__} {b!r:.200}"
    if isinstance(a, dict):
        for key in sorted(a.keys() | b.keys()):
            if key not in a or key not in b:
                side = "sqlite" if key in a else "convex"
                return f"{path}.{key}: only in {side}"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path or '.'}: {a!r:.200} != {b!r:.200}"


def assert_same(sqlite_side: dict[str, Any], convex_side: dict[str, Any]) -> None:
    assert sqlite_side.keys() == convex_side.keys()
    differences = []
    for name in sqlite_side:
        a, b = sqlite_side[name], without_system_fields(convex_side[name])
        if canonical(a) != canonical(b):
            differences.append(f"{name}: {first_difference(a, b)}")
    assert not differences, "sqlite != convex:\n" + "\n".join(differences)


def sqlite_tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, SQLite ids included: the store as it is."""
    conn = connect(path, read_only=True)
    try:
        return {name: conn.execute(f"SELECT * FROM {name} ORDER BY id").fetchall() for name in TABLES}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def parity(convex_local: ConvexLocal, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both stores filled once (and a second time), with what was read back after each pass."""
    convex_local.reset()
    assert convex_local.admin_key is not None
    env = daemon_env(CONVEX_ADMIN_KEY=convex_local.admin_key)
    work = tmp_path_factory.mktemp("parity")
    files = [*_recording_files(), _synthetic_v2(work), _synthetic_legacy(work)]
    database = work / "store.db"
    state_dir = work / "convex-state"
    sqlite_sink = [f"--sink=sqlite:{database}"]
    convex_sink = ingestor_argv("replay", convex_local.url, state_dir)[len(INGESTOR) + 1 :]
    ids = _ids(files, env)

    passes = []
    for _ in range(2):
        _replay(files, sqlite_sink, env)
        for name, stored in _stored_ids(database).items():
            ids[name] |= stored
        _replay(files, convex_sink, env)
        assert not (state_dir / DEAD_LETTER_FILE).exists(), (state_dir / DEAD_LETTER_FILE).read_text()
        passes.append(
            {
                "sqlite": read_sqlite(database, ids),
                "convex": read_convex(convex_local.url, env, ids),
                "tables": sqlite_tables(database),
            }
        )
    yield {"ids": ids, "passes": passes, "database": database, "url": convex_local.url, "env": env}


@pytest.mark.e2e
def test_every_conversation_turn_and_command_reads_back_the_same_from_both_stores(
    parity: dict[str, Any],
) -> None:
    first = parity["passes"][0]
    ids = parity["ids"]
    # Every id the operations name is found (not `null` in both), and the comparison covers a lot.
    for kind, query in (("conversationId", "conversation"), ("callId", "command")):
        missing = [i for i in ids[kind] if first["sqlite"][f"{query} {i}"] is None]
        assert not missing, f"{query}s not stored: {missing}"
    turns = [t for t in ids["turnId"] if first["sqlite"][f"turn {t}"] is not None]
    assert len(ids["conversationId"]) >= 10 and len(turns) >= 20 and len(ids["callId"]) >= 12
    events = sum(len(first["sqlite"][f"events {c}"]) for c in ids["conversationId"])
    assert events >= 500

    assert_same(first["sqlite"], first["convex"])


@pytest.mark.e2e
def test_replaying_everything_again_changes_neither_store(parity: dict[str, Any]) -> None:
    first, second = parity["passes"]
    # SQLite row by row with its ids; Convex as read, `_id` and `_creationTime` included.
    assert first["tables"] == second["tables"]
    assert canonical(first["convex"]) == canonical(second["convex"])
    assert_same(second["sqlite"], second["convex"])


@pytest.mark.e2e
def test_the_paths_the_recordings_miss_read_back_the_same(parity: dict[str, Any]) -> None:
    sqlite_side = parity["passes"][0]["sqlite"]
    synthetic = next(c for c in parity["ids"]["conversationId"] if c.startswith("5e1f0001-"))
    events = sqlite_side[f"events {synthetic}"]
    probes = {e["method"]: e for e in events if e["method"].startswith("probe/")}
    for method in ("probe/unsafeKeys", "probe/bigInteger", "probe/deep", "probe/largeUnsafe"):
        assert "payload" not in probes[method] and isinstance(probes[method]["payloadJson"], str), method
    assert probes["probe/numbers"]["payload"]["params"]["numbers"] == [
        11,
        0.5,
        0,
        1e300,
        200000000000000000000,
        1.5e-7,
        2**53,
    ]
    assert type(probes["probe/numbers"]["payload"]["params"]["numbers"][0]) is int
    assert any(len(m["content"]) > 100_000 for t in _turns(sqlite_side, synthetic) for m in t["messages"])
    legacy = next(c for c in parity["ids"]["conversationId"] if c.startswith("5e1f0002-"))
    outputs = [
        sqlite_side[f"command {c['callId']}"] for t in _turns(sqlite_side, legacy) for c in t["commands"]
    ]
    assert any(o["stdout"].startswith("café € \ufffd\ufffd \ufffd\ufffd\ufffd") for o in outputs), outputs


def _turns(side: dict[str, Any], conversation_id: str) -> list[dict[str, Any]]:
    conversation = side[f"conversation {conversation_id}"]
    return [side[f"turn {turn['turnId']}"] for turn in conversation["turns"]]


@pytest.mark.e2e
def test_ingestor_show_json_prints_the_same_for_both_stores(parity: dict[str, Any]) -> None:
    sqlite_side = parity["passes"][0]["sqlite"]
    synthetic = next(c for c in parity["ids"]["conversationId"] if c.startswith("5e1f0001-"))
    turn = sqlite_side[f"conversation {synthetic}"]["turns"][0]["turnId"]
    call_id = sqlite_side[f"turn {turn}"]["commands"][0]["callId"]
    for what, ident in (
        ("conversation", synthetic),
        ("turn", turn),
        ("command", call_id),
        ("events", synthetic),
    ):
        printed = []
        for sink in (
            [f"--sink=sqlite:{parity['database']}"],
            ["--sink=convex", f"--convex-url={parity['url']}"],
        ):
            result = subprocess.run(
                [*INGESTOR, "show", what, ident, "--json", *sink],
                env=parity["env"],
                capture_output=True,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
            printed.append(json.loads(result.stdout))
        assert canonical(printed[0]) == canonical(without_system_fields(printed[1])), what


# -- the fixes, on the SQLite reader's side -------------------------------------------------------


def test_numbers_read_back_as_convex_returns_them() -> None:
    value = {"a": [11.0, -0.0, 0.5, 2e20, 1e21, 1e300, 7, 2**70], "b": {"c": 41.0}, "s": "11.0"}
    presented = json_numbers(value)
    assert canonical(presented) == canonical(
        {"a": [11, 0, 0.5, 200000000000000000000, 1e21, 1e300, 7, 2**70], "b": {"c": 41}, "s": "11.0"}
    )
    assert type(presented["b"]["c"]) is int


def test_any_values_convex_cannot_hold_come_back_as_their_json_text() -> None:
    text = '{"$ref": 1, "x": 11.0}'
    assert present_any("payload", text) == ("payloadJson", text)
    big = '{"n": 123456789012345678901}'
    assert present_any("rawContent", big) == ("rawContentJson", big)
    assert present_any("payload", '{"ok": [1, 2.5]}') == ("payload", {"ok": [1, 2.5]})


def test_the_sqlite_reader_presents_stored_rows_like_history_queries(tmp_path: Path) -> None:
    from ingestor.sinks.sqlite.apply import apply_ops

    path = tmp_path / "store.db"
    conn = connect(path)
    unsafe = '{"café": 1, "n": 2.0}'
    apply_ops(
        conn,
        [
            {"op": "upsertConversation", "key": "c", "args": {"conversationId": "c1", "startedAt": 1}},
            {
                "op": "appendEvent",
                "key": "e:1",
                "args": {"conversationId": "c1", "method": "m", "payload": {"p": 11.0}, "receivedAt": 2},
            },
            {
                "op": "appendEvent",
                "key": "e:2",
                "args": {"conversationId": "c1", "method": "m", "payloadJson": unsafe, "receivedAt": 3},
            },
        ],
    )
    conn.close()

    async def main() -> list[dict[str, Any]]:
        async with open_sqlite_history(path) as reader:
            return await reader.list_events("c1")

    events = anyio.run(main)
    assert [(e.get("payload"), e.get("payloadJson")) for e in events] == [({"p": 11}, None), (None, unsafe)]
    assert type(events[0]["payload"]["p"]) is int


def test_convex_history_gives_numbers_in_the_same_form() -> None:
    from ingestor.sinks.convex.history import ConvexHistory

    class Api:
        async def query(self, path: str, args: dict[str, Any]) -> Any:
            if path == "history:listEvents":
                return {"page": [{"payload": {"n": 2e20}}], "isDone": True, "continueCursor": ""}
            return {"turn": {"n": 1.8446744073709552e19, "f": 0.5}}

        async def aclose(self) -> None:
            pass

    async def main() -> tuple[Any, Any]:
        history = ConvexHistory(Api())  # type: ignore[arg-type]
        return await history.get_turn("t"), await history.list_events("c")

    turn, events = anyio.run(main)
    assert turn == {"turn": {"n": 18446744073709551616, "f": 0.5}}
    assert type(turn["turn"]["n"]) is int and events[0]["payload"]["n"] == 200000000000000000000


async def _listings(reader: HistoryReader, conversation_ids: set[str]) -> dict[str, Any]:
    """What `show conversations`, `usage` and `export` read, through this reader."""
    snapshots = await usage.read_snapshots(reader)
    return {
        "conversations": await list_conversations(reader, Filters()),
        "usage snapshots": snapshots,
        **{f"usage by {by}": usage.report(usage.increments(snapshots), by) for by in usage.BY},
        **{f"export {cid}": await gather(reader, cid) for cid in sorted(conversation_ids)},
    }


@pytest.mark.e2e
def test_listings_usage_and_exports_read_the_same_from_both_stores(parity: dict[str, Any]) -> None:
    ids = parity["ids"]["conversationId"]

    async def sqlite_side() -> dict[str, Any]:
        async with open_sqlite_history(parity["database"]) as reader:
            return await _listings(reader, ids)

    async def convex_side() -> dict[str, Any]:
        async with open_history_from_env(parity["env"], ConvexOptions(url=parity["url"])) as reader:
            return await _listings(reader, ids)

    from_sqlite, from_convex = anyio.run(sqlite_side), anyio.run(convex_side)
    assert len(from_sqlite["conversations"]) == len(ids) and len(from_sqlite["usage snapshots"]) >= 40
    # The fork's rows carry what it inherited (the parent had spent 2,355 tokens), and so its own
    # usage is what its one model call used (1,335), through either store.
    inherited = {row.get("forkedFromUsage", {}).get("totalTokens") for row in from_convex["usage snapshots"]}
    assert 2355 in inherited
    assert 1335 in {row["totalTokens"] for row in from_convex["usage by session"]}
    # 0.63 exec multi_turn: three processes, each counting from zero (2,300, 2,700, 1,500, the second
    # above the first): stored `restarted`, the thread's input is the model server's 6,500.
    assert sum(row.get("restarted") is True for row in from_convex["usage snapshots"]) >= 3
    assert 6500 in {row["inputTokens"] for row in from_convex["usage by session"]}
    assert_same(from_sqlite, from_convex)
