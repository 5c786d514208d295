"""The normalization rules, one by one, on small hand-made lines (no I/O)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

import ingestor.normalize as normalize_module
from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.sinks.wire import convex_op
from tests.golden.helpers import T0, as_lines, legacy, normalize, rows, store_of, v2

THREAD = {"id": "th1", "modelProvider": "openai"}
STARTED = v2("thread/started", thread=THREAD)


def turn_started(turn_id: str = "tu1", started_at: int = 1_800_000_000) -> dict[str, Any]:
    return v2(
        "turn/started", threadId="th1", turn={"id": turn_id, "status": "inProgress", "startedAt": started_at}
    )


def turn_completed(status: str = "completed", turn_id: str = "tu1", error: Any = None) -> dict[str, Any]:
    turn = {"id": turn_id, "status": status, "error": error}
    return v2("turn/completed", threadId="th1", turn=turn)


def events(ops: list[Any]) -> list[Any]:
    return [op for op in ops if op["op"] == "appendEvent"]


# --- raw events ----------------------------------------------------------------------------------


def test_every_line_is_one_raw_event_first_with_its_method() -> None:
    lines: list[Any] = [
        {"id": 1, "result": {"userAgent": "x"}},
        STARTED,
        legacy({"type": "task_started"}),
        {"id": 7, "error": {"code": -1, "message": "no"}},
        {"type": "turn.started"},
        {"timestamp": "2026-01-01T00:00:00Z", "type": "event_msg", "payload": {"type": "x"}},
        {"id": "3", "msg": {"type": "agent_message", "message": "hi"}},
        [1, 2],
        b"not json",
        b"\xff\xfe",
    ]
    n = Normalizer("t")
    methods = []
    for line in as_lines(lines):
        out = n.feed(line)
        methods += [op["args"]["method"] for op in events(out)]
    methods += [op["args"]["method"] for op in events(n.finish())]
    assert methods == [
        "rpc/result",
        "thread/started",
        "codex/event/task_started",
        "rpc/error",
        "turn.started",
        "event_msg",
        "codex/event/agent_message",
        "ingestor/unknown",
        "ingestor/invalidJson",
        "ingestor/invalidJson",
    ]


def test_bad_lines_are_kept_losslessly() -> None:
    ops = normalize([STARTED, b"plain text", b"\xff\x00ok", b'{"a": 123456789012345678901234567890}'])
    payloads = [op["args"].get("payload") for op in events(ops)[1:]]
    assert payloads[0] == {"text": "plain text"}
    assert base64.b64decode(payloads[1]["base64"]) == b"\xff\x00ok"
    # orjson reads the integer as a float: Convex gets the line's own text, exact.
    sent = convex_op(events(ops)[3])["args"]
    assert "payload" not in sent
    assert sent["payloadJson"] == '{"a": 123456789012345678901234567890}'


def test_oversize_line_records_length_and_head() -> None:
    n = Normalizer("t", conversation_id="c")
    (op,) = events(n.feed(Line("t", 0, T0, b"x" * 10, oversize=5_000_000)) + n.finish())
    assert op["args"]["method"] == "ingestor/oversize"
    assert op["args"]["payload"] == {"bytes": 5_000_000, "headBase64": base64.b64encode(b"x" * 10).decode()}


def test_unsafe_payload_goes_to_payload_json() -> None:
    ops = normalize([STARTED, {"method": "x", "params": {"$bad": 1, "big": 2**60}}])
    assert events(ops)[1]["args"]["payload"] == {"method": "x", "params": {"$bad": 1, "big": 2**60}}
    sent = convex_op(events(ops)[1])["args"]
    assert "payload" not in sent
    assert orjson.loads(sent["payloadJson"]) == {"method": "x", "params": {"$bad": 1, "big": 2**60}}


def test_event_keys_are_the_lines_bytes_in_their_thread() -> None:
    warning = {"method": "warning", "params": {}}
    lines = [STARTED, warning, {"method": "other", "params": {"threadId": "th1"}}, warning]
    first, again = normalize(lines), normalize(lines)
    assert first == again
    keys = [op["key"] for op in events(first)]
    assert keys[1] == keys[3]  # the same line again is the same raw fact (a replay, an overlap)
    assert len(set(keys)) == 3
    # Not the line's position: a hello line in front, or a stream cut before it, changes nothing.
    hello = {"type": "ingestor.hello", "conversationId": "chat-1"}
    assert [op["key"] for op in events(normalize([hello, *lines]))][1:] == keys
    assert [op["key"] for op in events(normalize(lines[2:]))] == keys[2:]
    # The same bytes in another thread are another thread's line.
    other = normalize([{"method": "thread/started", "params": {"thread": {"id": "th2"}}}, warning])
    assert events(other)[1]["key"] != keys[1]


# --- conversations -------------------------------------------------------------------------------


def test_conversation_is_the_thread_and_early_lines_wait_for_it() -> None:
    n = Normalizer("t")
    lines = as_lines([{"id": 1, "result": {}}, STARTED])
    assert n.feed(lines[0]) == []
    out = n.feed(lines[1])
    assert [op["args"]["conversationId"] for op in events(out)] == ["th1", "th1"]
    (conv,) = rows(out, "conversations")
    assert conv == {
        "conversationId": "th1",
        "threadId": "th1",
        "modelProvider": "openai",
        "startedAt": T0,
        "lastSeenAt": T0 + 1,
    }


@pytest.mark.parametrize("thread_id", [[], {}, 7, None, ""])
def test_a_thread_id_that_is_no_string_names_no_thread(thread_id: Any) -> None:
    # Compiled, this once raised TypeError (a list where the code expected `str | None`).
    n = Normalizer("t")
    line = {"timestamp": "2026-01-01T00:00:00.000Z", "type": "event_msg", "payload": {"thread_id": thread_id}}
    (event,) = events(n.feed(as_lines([line])[0]) + n.finish())
    assert event["args"]["conversationId"] == "source:t"  # the fallback: no thread named


def test_conversation_starts_when_codex_created_the_thread_not_when_replayed() -> None:
    created_s = 1_795_000_000  # thread.createdAt is in seconds, and earlier than any line's arrival
    started = v2("thread/started", thread={**THREAD, "createdAt": created_s})
    ops = normalize([{"id": 1, "result": {}}, started])
    (conv,) = rows(ops, "conversations")
    assert conv["startedAt"] == created_s * 1000
    assert conv["lastSeenAt"] == T0 + 1


def test_constructor_and_hello_choose_the_conversation() -> None:
    ops = normalize([STARTED], conversation_id="chat-9")
    assert rows(ops, "conversations")[0]["conversationId"] == "chat-9"
    assert rows(ops, "conversations")[0]["threadId"] == "th1"
    hello = {
        "type": "ingestor.hello",
        "conversationId": "chat-7",
        "clientName": "openwebui",
        "modelProvider": "p",
    }
    ops = normalize([hello, STARTED])
    (conv,) = rows(ops, "conversations")
    assert (conv["conversationId"], conv["clientName"], conv["threadId"]) == ("chat-7", "openwebui", "th1")
    assert events(ops)[0]["args"]["method"] == "ingestor.hello"


def test_fallback_conversation_at_finish_and_at_the_bound() -> None:
    ops = normalize([{"id": 1, "result": {}}], source="unix:/s#3")
    assert events(ops)[0]["args"]["conversationId"] == "source:unix:/s#3"
    # The real bound, not a patched one: the compiled normalizer (setup.py) inlines its constants.
    bound = normalize_module.MAX_PENDING_LINES
    n = Normalizer("s")
    outs = [n.feed(line) for line in as_lines([{"id": i, "result": {}} for i in range(bound + 1)])]
    assert [len(events(o)) for o in outs[bound - 2 :]] == [0, bound, 1]
    assert sum(len(events(o)) for o in outs[: bound - 2]) == 0


@pytest.mark.skipif(
    not normalize_module.__file__.endswith(".py"), reason="compiled: module globals are bound at build time"
)
def test_a_line_that_names_its_thread_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session file's first line (0.169's session_meta: the whole system prompt) names its thread and
    releases itself at once: its parse is reused, not repeated (once per file of an archive)."""
    parsed: list[bytes] = []
    real_parse = normalize_module.parse

    def counting_parse(line: Line) -> Any:
        parsed.append(line.data)
        return real_parse(line)

    monkeypatch.setattr(normalize_module, "parse", counting_parse)
    meta = {"timestamp": "2026-11-22T03:29:09.121Z", "type": "session_meta", "payload": {"id": "th1"}}
    ops = normalize([meta, STARTED, turn_started()])
    assert parsed == []
    assert [e["args"]["method"] for e in events(ops)] == ["session_meta", "thread/started", "turn/started"]
    # Lines held before the thread is known are still parsed when released (they are kept as bytes).
    normalize([{"id": 1, "result": {}}, STARTED])
    assert parsed == [orjson.dumps({"id": 1, "result": {}})]


def test_each_thread_is_its_own_conversation() -> None:
    other = v2("thread/started", thread={"id": "th2"})
    ops = normalize([STARTED, turn_started(), other, v2("turn/started", threadId="th2", turn={"id": "tu2"})])
    turns = {t["turnId"]: t["conversationId"] for t in rows(ops, "turns")}
    assert turns == {"tu1": "th1", "tu2": "th2"}
    assert {c["conversationId"] for c in rows(ops, "conversations")} == {"th1", "th2"}


# --- turns ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "stored"),
    [
        ("completed", None, ("succeeded", None)),
        ("failed", {"message": "boom"}, ("failed", "boom")),
        ("interrupted", None, ("canceled", None)),
    ],
)
def test_v2_turn_lifecycle(status: str, error: Any, stored: tuple[str, str | None]) -> None:
    ops = normalize([STARTED, turn_started(), turn_completed(status, error=error)])
    (turn,) = rows(ops, "turns")
    assert (turn["status"], turn.get("error")) == stored
    assert turn["startedAt"] == 1_800_000_000_000  # Codex sends seconds
    assert turn["endedAt"] == T0 + 2
    assert turn["conversationId"] == "th1"


def test_error_fails_the_turn_unless_codex_retries() -> None:
    retry = v2("error", threadId="th1", turnId="tu1", willRetry=True, error={"message": "again"})
    final = v2("error", threadId="th1", turnId="tu1", willRetry=False, error={"message": "gone"})
    assert rows(normalize([STARTED, turn_started(), retry]), "turns")[0]["status"] == "running"
    (turn,) = rows(normalize([STARTED, turn_started(), final, turn_completed()]), "turns")
    assert (turn["status"], turn["error"]) == ("failed", "gone")


def test_idle_thread_ends_a_turn_that_never_completes() -> None:
    idle = v2("thread/status/changed", threadId="th1", status={"type": "idle"})
    assert rows(normalize([STARTED, turn_started(), idle]), "turns")[0]["status"] == "succeeded"


def test_legacy_and_v2_copies_make_one_turn_with_counter_ids_scoped_by_thread() -> None:
    lines = [
        STARTED,
        {"method": "turn/started", "params": {"turn": {"id": "0", "status": "inProgress"}}},
        legacy({"type": "task_started"}, "0"),
        legacy({"type": "task_complete"}, "0"),
        {"method": "turn/completed", "params": {"turn": {"id": "0", "status": "completed"}}},
    ]
    (turn,) = rows(normalize(lines), "turns")
    assert (turn["turnId"], turn["status"]) == ("th1/0", "succeeded")


def test_exec_runs_are_the_threads_turns_in_order_across_resumes() -> None:
    """exec names no turns: each run is named by its first line after `turn.started`, and the store
    numbers runs per thread (`<thread>/turn-<n>`), ids under the run (`item_0`) under that turn."""
    run = [{"type": "thread.started", "thread_id": "th1"}, {"type": "turn.started"}]

    def item(command: str) -> dict[str, Any]:
        return {
            "type": "item.completed",
            "item": {"id": "item_0", "type": "command_execution", "command": command},
        }

    done = {
        "type": "turn.completed",
        "usage": {"input_tokens": 5, "cached_input_tokens": 1, "output_tokens": 2},
    }
    failed = {"type": "turn.failed", "error": {"message": "500"}}
    ops = normalize([*run, item("ls"), done, *run, item("pwd"), failed])
    turns = [(t["turnId"], t["turnNumber"], t["status"], t.get("error")) for t in rows(ops, "turns")]
    assert turns == [("th1/turn-1", 1, "succeeded", None), ("th1/turn-2", 2, "failed", "500")]
    assert [c["callId"] for c in rows(ops, "commands")] == ["th1/turn-1/item_0", "th1/turn-2/item_0"]
    (usage,) = rows(ops, "usage_snapshots")
    assert (usage["totalInputTokens"], usage["source"], usage["turnId"]) == (5, "exec-json", "th1/turn-1")
    # The `turn.started` line, the same bytes in every run, is one raw event of the thread, in no turn.
    started = [e for e in rows(ops, "events_raw") if e["method"] == "turn.started"]
    assert [e.get("turnId") for e in started] == [None]


def test_a_resumed_exec_run_in_its_own_process_continues_the_thread() -> None:
    """`codex exec resume` piped into its own `ingestor run`: the run is the thread's second turn,
    and the first run's stream replayed after it still lands in the first."""
    first = [{"type": "thread.started", "thread_id": "th1"}, {"type": "turn.started"}]
    first.append({"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": "one"}})
    second = [
        *first[:2],
        {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": "two"}},
    ]
    store = store_of(normalize(first, source="run-1"))
    store.apply(normalize(second, source="run-2"))
    store.apply(normalize(first, source="run-1-again"))
    messages = {m["content"]: m["turnId"] for m in store.tables["messages"].values()}
    assert messages == {"one": "th1/turn-1", "two": "th1/turn-2"}
    assert sorted(store.tables["turns"]) == ["th1/turn-1", "th1/turn-2"]


# --- commands and chunks -------------------------------------------------------------------------


def command_item(status: str, **extra: Any) -> dict[str, Any]:
    item = {
        "type": "commandExecution",
        "id": "call_1",
        "command": "/bin/bash -lc 'echo hi'",
        "status": status,
    }
    return {**item, **extra}


def test_v2_command_argv_status_and_fields() -> None:
    start = v2("item/started", threadId="th1", turnId="tu1", item=command_item("inProgress", cwd="/w"))
    end = v2(
        "item/completed",
        threadId="th1",
        turnId="tu1",
        item=command_item("completed", exitCode=0, durationMs=12, aggregatedOutput="hi\n"),
    )
    ops = normalize([STARTED, turn_started(), start])
    assert rows(ops, "commands")[0]["status"] == "running"
    (cmd,) = rows(normalize([STARTED, turn_started(), start, end]), "commands")
    assert cmd["command"] == ["/bin/bash", "-lc", "echo hi"]
    assert (cmd["status"], cmd["exitCode"], cmd["durationMs"], cmd["cwd"]) == ("completed", 0, 12, "/w")
    assert (cmd["turnId"], cmd["aggregatedOutput"], cmd["chunked"]) == ("tu1", "hi\n", False)


def test_unsplittable_command_is_kept_whole() -> None:
    start = v2(
        "item/started",
        threadId="th1",
        turnId="tu1",
        item={**command_item("inProgress"), "command": "echo 'x"},
    )
    assert rows(normalize([STARTED, turn_started(), start]), "commands")[0]["command"] == ["echo 'x"]


def test_legacy_command_with_exact_chunks() -> None:
    begin = legacy(
        {"type": "exec_command_begin", "call_id": "c1", "command": ["bash", "-c", "x"], "cwd": "/w"}
    )
    out = legacy(
        {"type": "exec_command_output_delta", "call_id": "c1", "stream": "stdout", "chunk": "//4gb2sK"}
    )
    err = legacy(
        {"type": "exec_command_output_delta", "call_id": "c1", "stream": "stderr", "chunk": [104, 105]}
    )
    end = legacy(
        {
            "type": "exec_command_end",
            "call_id": "c1",
            "exit_code": 2,
            "duration": {"secs": 1, "nanos": 500_000_000},
            "stdout": "?",
            "stderr": "hi",
        }
    )
    ops = normalize([STARTED, legacy({"type": "task_started"}), begin, out, err, end])
    (cmd,) = rows(ops, "commands")
    assert (cmd["command"], cmd["status"], cmd["exitCode"], cmd["durationMs"]) == (
        ["bash", "-c", "x"],
        "failed",
        2,
        1500,
    )
    assert (cmd["chunked"], cmd["stderr"], cmd["turnId"]) == (True, "hi", "th1/0")
    chunks = rows(ops, "command_chunks")
    assert [(c["stream"], c["seq"], base64.b64decode(c["chunkBase64"])) for c in chunks] == [
        ("stdout", 0, b"\xff\xfe ok\n"),
        ("stderr", 1, b"hi"),
    ]


def test_big_chunks_are_split_and_seq_is_contiguous() -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes: four pieces
    delta = legacy(
        {
            "type": "exec_command_output_delta",
            "call_id": "c1",
            "stream": "stdout",
            "chunk": base64.b64encode(data).decode(),
        }
    )
    ops = normalize([STARTED, legacy({"type": "task_started"}), delta, delta])
    chunks = rows(ops, "command_chunks")
    assert [c["seq"] for c in chunks] == list(range(8))
    raw = [base64.b64decode(c["chunkBase64"]) for c in chunks]
    assert max(map(len, raw)) == 64 * 1024
    assert b"".join(raw) == data * 2


def test_one_stream_kind_claims_a_commands_chunks() -> None:
    legacy_delta = legacy(
        {"type": "exec_command_output_delta", "call_id": "c1", "stream": "stdout", "chunk": "aGkK"}
    )
    v2_delta = {"method": "item/commandExecution/outputDelta", "params": {"itemId": "c1", "delta": "hi\n"}}
    ops = normalize(
        [STARTED, legacy({"type": "task_started"}), legacy_delta, v2_delta, legacy_delta, v2_delta]
    )
    chunks = rows(ops, "command_chunks")
    assert [(c["seq"], c["encoding"]) for c in chunks] == [(0, "raw"), (1, "raw")]
    ops = normalize([STARTED, turn_started(), v2_delta, legacy_delta])
    assert [c["encoding"] for c in rows(ops, "command_chunks")] == ["utf-8-merged"]


# --- messages, reasoning -------------------------------------------------------------------------


def test_messages_are_stored_once_across_streams_and_repeats_are_kept() -> None:
    user = {"type": "userMessage", "id": "u1", "content": [{"type": "text", "text": "Do it"}]}
    agent = {"type": "agentMessage", "id": "m1", "text": "Done."}
    lines = [
        STARTED,
        {"method": "turn/started", "params": {"turn": {"id": "0"}}},
        legacy({"type": "user_message", "message": "Do it", "images": []}),
        {"method": "item/completed", "params": {"item": user}},
        legacy({"type": "agent_message", "message": "Done."}),
        {"method": "item/completed", "params": {"item": agent}},
        legacy({"type": "agent_message", "message": "Done."}),
        {"method": "item/completed", "params": {"item": agent}},
    ]
    messages = rows(normalize(lines), "messages")
    assert [(m["role"], m["content"], m["turnId"]) for m in messages] == [
        ("user", "Do it", "th1/0"),
        ("assistant", "Done.", "th1/0"),
        ("assistant", "Done.", "th1/0"),
    ]
    assert messages[0]["rawContent"] == {"type": "user_message", "message": "Do it", "images": []}


def test_reasoning_items_win_over_per_section_events() -> None:
    item = {"type": "reasoning", "id": "rs_1", "summary": ["a", "b"], "content": []}
    lines = [
        STARTED,
        turn_started(),
        v2("item/completed", threadId="th1", turnId="tu1", item=item),
        legacy({"type": "agent_reasoning", "text": "a"}, "tu1"),
        legacy({"type": "agent_reasoning", "text": "b"}, "tu1"),
    ]
    (section,) = rows(normalize(lines), "reasoning_sections")
    assert (section["itemId"], section["summaryText"], section["position"]) == ("rs_1", ["a", "b"], 0)


# --- usage and rate limits -----------------------------------------------------------------------


def test_usage_is_thread_cumulative_and_deduped_across_streams() -> None:
    total = {
        "totalTokens": 15,
        "inputTokens": 10,
        "cachedInputTokens": 2,
        "outputTokens": 5,
        "reasoningOutputTokens": 1,
    }
    usage_v2 = v2(
        "thread/tokenUsage/updated",
        threadId="th1",
        turnId="tu1",
        tokenUsage={"total": total, "last": {}, "modelContextWindow": 9000},
    )
    info = {
        "total_token_usage": {
            "input_tokens": 10,
            "cached_input_tokens": 2,
            "output_tokens": 5,
            "reasoning_output_tokens": 1,
            "total_tokens": 15,
        },
        "model_context_window": 9000,
    }
    count = legacy({"type": "token_count", "info": info, "rate_limits": None}, "tu1")
    (usage,) = rows(normalize([STARTED, turn_started(), usage_v2, count, count]), "usage_snapshots")
    assert usage == {
        "key": usage["key"],
        "turnId": "tu1",
        "totalInputTokens": 10,
        "cachedInputTokens": 2,
        "outputTokens": 5,
        "reasoningOutputTokens": 1,
        "totalTokens": 15,
        "modelContextWindow": 9000,
        "source": "app-server",
        "capturedAt": T0 + 2,
    }


def _token_count(total: dict[str, int], last: dict[str, int]) -> dict[str, Any]:
    info = {"total_token_usage": total, "last_token_usage": last}
    return legacy({"type": "token_count", "info": info, "rate_limits": None}, "tu1")


def test_usage_counted_from_zero_at_the_last_call_is_restarted_outside_its_identity() -> None:
    """0.63 `exec resume` begins the totals again: `last_token_usage` == `total_token_usage` marks
    the snapshot `restarted`; the same totals told without the mark are the same snapshot."""
    first, grown, call, again = (
        {"input_tokens": i, "cached_input_tokens": c, "output_tokens": o, "reasoning_output_tokens": r}
        for i, c, o, r in ((1100, 0, 25, 3), (2300, 200, 55, 9), (1200, 200, 30, 6), (2400, 0, 60, 6))
    )
    lines = [STARTED, turn_started(), _token_count(first, first), _token_count(grown, call)]
    lines.append(_token_count(again, again))
    snapshots = rows(normalize(lines), "usage_snapshots")
    assert [(u["totalInputTokens"], u.get("restarted")) for u in snapshots] == [
        (1100, True),
        (2300, None),
        (2400, True),
    ]
    unmarked = rows(normalize([STARTED, turn_started(), _token_count(again, call)]), "usage_snapshots")
    assert unmarked[0]["key"] == snapshots[2]["key"] and "restarted" not in unmarked[0]


def _exec_run(thread: str, usage: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {"type": "thread.started", "thread_id": thread},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": str(usage)}},
        {"type": "turn.completed", "usage": usage},
    ]


def test_an_exec_process_that_reports_no_reasoning_restarts_its_totals() -> None:
    """0.63's exec stream (no reasoning count) reports its process's totals: each process's first is
    `restarted`. 0.169's (with reasoning) go on from the thread's: never marked."""
    old_a, old_b = ({"input_tokens": n, "cached_input_tokens": 0, "output_tokens": 5} for n in (2300, 2700))
    new_a, new_b = ({**u, "reasoning_output_tokens": 1} for u in (old_a, {**old_a, "input_tokens": 5000}))
    old = rows(normalize([*_exec_run("th1", old_a), *_exec_run("th1", old_b)]), "usage_snapshots")
    assert [u.get("restarted") for u in old] == [True, True]
    new = rows(normalize([*_exec_run("th1", new_a), *_exec_run("th1", new_b)]), "usage_snapshots")
    assert [u.get("restarted") for u in new] == [None, None]


def _plan_keys(lines: list[Any]) -> list[str]:
    return [op["key"] for op in normalize(lines) if op["op"] == "appendMessage"]


def test_a_plan_is_one_message_whether_exec_or_a_richer_channel_tells_it() -> None:
    """exec's `todo_list` tells each step's text and whether it is done, no explanation and no
    in-progress mark: the plan's key is what every channel tells, so the session file's (or v2's)
    plan and exec's are one row; an update that changes only what exec cannot tell is a row of its
    own, which exec, repeating its plan, never adds to."""
    steps = [{"step": "Inspect", "status": "completed"}, {"step": "Search", "status": "pending"}]
    going = [steps[0], {"step": "Search", "status": "inProgress"}]
    plan = [STARTED, turn_started()]
    plan += [
        v2("turn/plan/updated", threadId="th1", turnId="tu1", explanation=why, plan=p)
        for why, p in (("Two steps.", steps), ("Two steps.", going), ("Searching now.", going))
    ]
    rich = _plan_keys(plan)
    assert len(set(rich)) == 3
    todo = {"id": "item_0", "type": "todo_list", "items": [{"text": "Inspect", "completed": True}]}
    todo["items"].append({"text": "Search", "completed": False})
    exec_lines = [{"type": "thread.started", "thread_id": "th1"}, {"type": "turn.started"}]
    exec_lines += [{"type": t, "item": todo} for t in ("item.started", "item.updated", "item.completed")]
    assert set(_plan_keys(exec_lines)) == {rich[0]}


def test_rate_limit_windows_are_classified_by_duration() -> None:
    limits = {
        "primary": {"usedPercent": 40, "windowDurationMins": 10080, "resetsAt": 1_900_000_000},
        "secondary": {"usedPercent": 11, "windowDurationMins": 300, "resetsAt": 1_900_500_000},
        "credits": {"hasCredits": True, "unlimited": False, "balance": "12.5"},
    }
    update = v2("account/rateLimits/updated", rateLimits=limits)
    ops = normalize([STARTED, update, turn_started(), update])  # the first waits for the turn
    got = sorted(
        (
            r["scope"],
            r.get("usedPercent"),
            r.get("windowMinutes"),
            r.get("resetsAt"),
            r.get("balance"),
            r["turnId"],
        )
        for r in rows(ops, "rate_limits")
    )
    assert got == [
        ("credits", None, None, None, "12.5", "tu1"),
        ("primary", 11, 300, 1_900_500_000_000, None, "tu1"),
        ("secondary", 40, 10080, 1_900_000_000_000, None, "tu1"),
    ]


def test_legacy_relative_resets_and_first_kind_owns_rate_limits() -> None:
    limits = {"primary": {"used_percent": 40.5, "window_minutes": 300, "resets_in_seconds": 60}}
    count = legacy({"type": "token_count", "info": None, "rate_limits": limits})
    rounded = v2(
        "account/rateLimits/updated", rateLimits={"primary": {"usedPercent": 41, "windowDurationMins": 300}}
    )
    ops = normalize([STARTED, legacy({"type": "task_started"}), count, rounded])
    (limit,) = rows(ops, "rate_limits")
    assert (limit["usedPercent"], limit["resetsAt"]) == (40.5, T0 + 2 + 60_000)


# --- session files -------------------------------------------------------------------------------


def session(kind: str, payload: dict[str, Any], second: int = 0) -> dict[str, Any]:
    return {"timestamp": f"2026-11-22T03:00:{second:02d}.000Z", "type": kind, "payload": payload}


def test_old_session_files_infer_turns_from_user_messages() -> None:
    lines = [
        session("session_meta", {"id": "th9", "model_provider": "mock", "originator": "codex_cli_rs"}),
        session("event_msg", {"type": "user_message", "message": "one"}, 1),
        session("event_msg", {"type": "agent_message", "message": "ok"}, 2),
        session("event_msg", {"type": "user_message", "message": "two"}, 3),
        session("event_msg", {"type": "user_message", "message": "three"}, 4),
        session("event_msg", {"type": "agent_message", "message": "ok"}, 5),
    ]
    ops = normalize(lines)
    turns = [(t["turnId"], t["status"]) for t in rows(ops, "turns")]
    assert turns == [("th9/turn-1", "succeeded"), ("th9/turn-2", "failed"), ("th9/turn-3", "succeeded")]
    assert rows(ops, "turns")[0]["startedAt"] == 1_795_316_401_000  # the line's timestamp
    assert rows(ops, "conversations")[0]["clientName"] == "codex_cli_rs"


def test_new_session_files_use_turn_ids_and_items() -> None:
    tid = "01a2-turn"
    item = {
        "type": "CommandExecution",
        "id": "call_1",
        "command": ["/bin/bash", "-lc", "exit 3"],
        "cwd": "file:///tmp/a%20b",
        "status": "failed",
        "exit_code": 3,
        "duration": {"secs": 0, "nanos": 38086},
        "source": "unified_exec_startup",
    }
    lines = [
        session("session_meta", {"id": "th9"}),
        session("event_msg", {"type": "task_started", "turn_id": tid}),
        session("event_msg", {"type": "item_completed", "turn_id": tid, "item": item}),
        session("event_msg", {"type": "task_complete", "turn_id": tid, "error": {"message": "500"}}),
    ]
    ops = normalize(lines)
    (turn,) = rows(ops, "turns")
    assert (turn["turnId"], turn["status"], turn["error"]) == (tid, "failed", "500")
    (cmd,) = rows(ops, "commands")
    assert (cmd["cwd"], cmd["source"], cmd["exitCode"], cmd["durationMs"]) == (
        "/tmp/a b",
        "command",  # the spec's kind of tool call, not Codex's origin (unified_exec_startup)
        3,
        0,
    )


def test_replay_yields_identical_ops() -> None:
    lines = [STARTED, turn_started(), command_item("inProgress"), turn_completed(), b"junk"]
    first = normalize(lines)
    assert normalize(lines) == first
    store = store_of(first)
    before = {t: dict(r) for t, r in store.tables.items()}
    store.apply(first)
    assert {t: dict(r) for t, r in store.tables.items()} == before


def test_an_error_between_turns_does_not_fail_the_turn_before() -> None:
    stray = v2("error", threadId="th1", willRetry=False, error={"message": "mcp down"})
    legacy_stray = legacy({"type": "error", "message": "mcp down"}, "")
    (turn,) = rows(normalize([STARTED, turn_started(), turn_completed(), stray, legacy_stray]), "turns")
    assert turn["status"] == "succeeded"


def test_anonymous_v2_twins_of_legacy_events_are_raw_only() -> None:
    # Codex 0.63, two threads: the v2 copy of thread A's turn start arrives while B was current.
    lines = [
        STARTED,
        legacy({"type": "task_started"}, "0", "th1"),
        v2("thread/started", thread={"id": "th2"}),
        legacy({"type": "task_started"}, "0", "th2"),
        {"method": "turn/started", "params": {"turn": {"id": "1"}}},
        legacy({"type": "task_started"}, "1", "th1"),
    ]
    turns = sorted((t["turnId"], t["conversationId"]) for t in rows(normalize(lines), "turns"))
    assert turns == [("th1/0", "th1"), ("th1/1", "th1"), ("th2/0", "th2")]


def test_relative_reset_times_still_dedupe_when_replayed_later() -> None:
    limits = {"primary": {"used_percent": 5.0, "window_minutes": 300, "resets_in_seconds": 60}}
    lines = as_lines(
        [STARTED, legacy({"type": "task_started"}), legacy({"type": "token_count", "rate_limits": limits})]
    )
    keys = []
    for shift in (0, 5_000):
        n = Normalizer("t")
        ops = [
            op
            for line in lines
            for op in n.feed(Line(line.source, line.ordinal, line.received_at + shift, line.data))
        ]
        (limit,) = [op for op in ops if op["op"] == "appendRateLimit"]
        assert limit["args"]["resetsAt"] == T0 + shift + 2 + 60_000
        assert "resetsInSeconds" not in limit["args"]
        keys.append(limit["key"])
    assert keys[0] == keys[1]


def test_older_id_msg_lines() -> None:
    lines = [
        {"id": "", "msg": {"type": "session_configured", "session_id": "th5", "model": "gpt-5"}},
        {"id": "0", "msg": {"type": "task_started"}},
        {"id": "0", "msg": {"type": "agent_message", "message": "hello"}},
        {"id": "0", "msg": {"type": "task_complete"}},
    ]
    ops = normalize(lines)
    (turn,) = rows(ops, "turns")
    assert (turn["turnId"], turn["conversationId"], turn["status"], turn["model"]) == (
        "th5/0",
        "th5",
        "succeeded",
        "gpt-5",
    )
    assert [m["content"] for m in rows(ops, "messages")] == ["hello"]
    assert [op["args"]["method"] for op in events(ops)][:2] == [
        "codex/event/session_configured",
        "codex/event/task_started",
    ]


# --- memory over a long-lived connection ---------------------------------------------------------


def _short_turn(thread: str, n: int) -> list[Any]:
    turn = f"tu{n}"
    ids = {"threadId": thread, "turnId": turn}
    return [
        v2("turn/started", threadId=thread, turn={"id": turn, "status": "inProgress"}),
        v2("item/started", **ids, item={"type": "commandExecution", "id": f"call{n}", "command": "ls"}),
        v2("item/commandExecution/outputDelta", **ids, itemId=f"call{n}", delta="a\n"),
        v2("item/completed", **ids, item={"type": "agentMessage", "id": f"m{n}", "text": f"done {n}"}),
        v2("turn/completed", threadId=thread, turn={"id": turn, "status": "completed"}),
    ]


def _short_thread(n: int) -> list[Any]:
    return [v2("thread/started", thread={"id": f"th{n}"}), *_short_turn(f"th{n}", n)]


def test_a_connection_keeps_no_state_for_finished_turns_and_idle_threads() -> None:
    from ingestor.normalize.state import MAX_THREADS, RETAINED_TURNS

    n = Normalizer("long-lived")
    count = MAX_THREADS + 500
    ops = []
    for line in as_lines([line for k in range(count) for line in _short_thread(k)]):
        ops += n.feed(line)
    state = n._s
    assert len(state.threads) == MAX_THREADS
    assert len(state.turn_started_at) <= RETAINED_TURNS
    assert len(state.commands) <= RETAINED_TURNS and len(state.occurrences) <= RETAINED_TURNS
    # Forgetting cost nothing: every thread, turn, command and message is there, once.
    assert len(rows(ops, "conversations")) == count
    assert len(rows(ops, "turns")) == count and len(rows(ops, "commands")) == count
    assert len(rows(ops, "messages")) == count and len(rows(ops, "command_chunks")) == count


def test_late_copies_of_a_recent_turns_facts_still_meet_their_first_copy() -> None:
    """0.63 sent each fact twice (v2 and legacy); a copy may come after its turn ended, even after
    the next turn: the state of the last few ended turns is kept, so the copy meets the first one."""
    late = legacy({"type": "agent_message", "message": "done 1"}, sub_id="tu1", conversation="th1")
    lines = [*_short_thread(1), *_short_turn("th1", 2), late]
    ops = normalize(lines)
    assert [(m["turnId"], m["content"]) for m in rows(ops, "messages")] == [
        ("tu1", "done 1"),
        ("tu2", "done 2"),
    ]
    assert normalize(lines) == ops


def test_rate_limits_held_for_a_turn_are_bounded() -> None:
    """Reports before any turn wait for one, but not without end: past 64 they go without a turn
    (the store files them in the thread's latest turn, or refuses them if it has none)."""
    limits = [
        v2(
            "account/rateLimits/updated",
            rateLimits={"primary": {"usedPercent": i, "windowDurationMins": 300}},
        )
        for i in range(100)
    ]
    n = Normalizer("t")
    ops = []
    for line in as_lines([STARTED, *limits]):
        ops += n.feed(line)
    assert len(n._s.turnless) < 64
    held = [op for op in ops if op["op"] == "appendRateLimit"]
    assert len(held) > 36 and all("turnId" not in op["args"] for op in held)
    assert len(held + [op for op in n.finish() if op["op"] == "appendRateLimit"]) == 100


def test_an_overlong_id_is_refused_and_never_multiplied() -> None:
    """A 1 MiB conversation or thread id would be copied into every op: it is refused (the line is
    kept raw, counted as a line whose facts could not be read)."""
    huge = "x" * (1 << 20)
    n = Normalizer("t")
    lines = as_lines(
        [
            {"type": "ingestor.hello", "conversationId": huge},
            v2("thread/started", thread={"id": huge}),
            STARTED,
            v2("turn/started", threadId="th1", turn={"id": "tu1", "status": "inProgress"}),
        ]
    )
    ops = [op for line in lines for op in n.feed(line)] + n.finish()
    assert n.derive_errors >= 1
    assert {row["conversationId"] for row in rows(ops, "events_raw")} == {"th1"}
    assert sum(len(orjson.dumps(op)) for op in ops) < 3 * (1 << 20)  # the two lines themselves, once
