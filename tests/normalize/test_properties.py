"""Property tests: whatever arrives, the normalizer neither crashes nor loses a line."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.normalize.state import MAX_ID_CHARS
from ingestor.ops import ANY_COLUMNS, Op
from ingestor.sinks.wire import convex_op, encode_op, is_convex_safe
from tests.golden.helpers import T0, normalize, rows, v2

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)

# Objects shaped like Codex lines, with arbitrary values where Codex puts its fields.
codex_keys = st.sampled_from(
    [
        "method",
        "params",
        "id",
        "msg",
        "type",
        "payload",
        "timestamp",
        "thread",
        "turn",
        "item",
        "turnId",
        "threadId",
        "status",
        "command",
        "call_id",
        "chunk",
        "stream",
        "info",
        "rate_limits",
        "rateLimits",
        "primary",
        "secondary",
        "credits",
        "tokenUsage",
        "total",
        "usage",
        "thread_id",
        "turn_id",
        "delta",
        "itemId",
        "error",
        "willRetry",
        "text",
        "message",
        "content",
        "summary",
        "exit_code",
        "duration",
        "conversationId",
        "startedAt",
        "resetsAt",
        "windowDurationMins",
        "total_token_usage",
        "arguments",
    ]
)
codex_methods = st.sampled_from(
    [
        "thread/started",
        "turn/started",
        "turn/completed",
        "item/started",
        "item/completed",
        "item/commandExecution/outputDelta",
        "thread/tokenUsage/updated",
        "account/rateLimits/updated",
        "error",
        "thread/status/changed",
        "codex/event/exec_command_begin",
        "codex/event/token_count",
        "codex/event/exec_command_output_delta",
        "codex/event/exec_command_end",
        "codex/event/task_started",
        "codex/event/item_completed",
        "codex/event/agent_message",
        "codex/event/user_message",
    ]
)
codex_types = st.sampled_from(
    [
        "thread.started",
        "turn.started",
        "turn.completed",
        "turn.failed",
        "item.completed",
        "error",
        "session_meta",
        "event_msg",
        "response_item",
        "turn_context",
        "ingestor.hello",
        "task_started",
        "token_count",
        "exec_command_output_delta",
        "item_completed",
        "user_message",
        "function_call",
        "commandExecution",
        "command_execution",
        "CommandExecution",
        "reasoning",
        "agentMessage",
    ]
)
shaped = st.recursive(
    json_values | codex_methods | codex_types,
    lambda children: st.dictionaries(codex_keys, children, max_size=6),
    max_leaves=30,
)


def run(datas: list[bytes]) -> tuple[list[Op], Normalizer]:
    n = Normalizer("prop")
    ops: list[Op] = []
    for i, data in enumerate(datas):
        ops += n.feed(Line("prop", i, T0 + i, data))
    ops += n.finish()
    return ops, n


def _refused_hello(data: bytes) -> bool:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    if type(value) is not dict or value.get("type") != "ingestor.hello":
        return False
    conversation = value.get("conversationId")
    return conversation is not None and not (
        type(conversation) is str and 0 < len(conversation) <= MAX_ID_CHARS
    )


def check(datas: list[bytes]) -> list[Op]:
    ops, n = run(datas)
    events = [op for op in ops if op["op"] == "appendEvent"]
    assert len(events) == len(datas)
    # One raw fact per distinct line of a thread (a line again is the same line: raw.event_op).
    scopes = [op.get("thread") or op["args"]["conversationId"] for op in events]
    assert len({op["key"] for op in events}) == len(set(zip(scopes, datas, strict=True)))
    # The only lines whose facts may go unread: hello lines naming an id the normalizer refuses.
    assert n.derive_errors <= sum(map(_refused_hello, datas))
    for op in ops:
        sent = orjson.loads(encode_op(op))  # every op can be sent, in Convex's value space
        for name, value in sent["args"].items():
            assert is_convex_safe(value), (op["op"], name, value)
            if type(value) in (int, float) and name not in ANY_COLUMNS:
                assert abs(value) <= 2**53, (op["op"], name, value)
        for name in ANY_COLUMNS:
            if name in op["args"] and name not in sent["args"]:
                json_text = convex_op(op)["args"][name + "Json"]
                assert not is_convex_safe(orjson.loads(json_text)) or _beyond_floats(json_text), (op, name)
    return ops


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, max_size=12))
def test_arbitrary_json_values(values: list[Any]) -> None:
    check([orjson.dumps(v) for v in values])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_arbitrary_bytes(datas: list[bytes]) -> None:
    check(datas)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(shaped, max_size=15))
def test_codex_shaped_objects(values: list[Any]) -> None:
    check([orjson.dumps(v) for v in values])


STORY: list[Any] = [
    v2("thread/started", thread={"id": "th1"}),
    v2("turn/started", threadId="th1", turn={"id": "tu1", "status": "inProgress"}),
    v2(
        "item/completed", threadId="th1", turnId="tu1", item={"type": "agentMessage", "id": "m", "text": "hi"}
    ),
    v2("turn/completed", threadId="th1", turn={"id": "tu1", "status": "completed"}),
]


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=20) | json_values.map(orjson.dumps), max_size=len(STORY) + 1))
def test_valid_lines_around_bad_ones_are_not_lost(noise: list[bytes]) -> None:
    mixed: list[Any] = []
    for i, line in enumerate(STORY):
        mixed += [*noise[i : i + 1], line]
    mixed += noise[len(STORY) :]
    ops = normalize(mixed, conversation_id="c")
    assert [(t["turnId"], t["status"]) for t in rows(ops, "turns")][-1:] == [("tu1", "succeeded")]
    assert [m["content"] for m in rows(ops, "messages") if m["turnId"] == "tu1"] == ["hi"]
    distinct = {line if isinstance(line, bytes) else orjson.dumps(line) for line in mixed}
    assert len(rows(ops, "events_raw")) == len(distinct)  # all in thread th1


def _mutate(value: Any, rng: random.Random, replacement: Any) -> Any:
    """`value` with one randomly chosen sub-value replaced."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        return {**value, key: _mutate(value[key], rng, replacement)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return [*value[:i], _mutate(value[i], rng, replacement), *value[i + 1 :]]
    return replacement


def _small_fixture_lines() -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted(FIXTURES.glob("**/*.jsonl")):
        if path.stat().st_size < 200_000:
            lines += path.read_bytes().splitlines()
    return lines


REAL_LINES = _small_fixture_lines()


# No deadline: 40 real lines an example take 130-260 ms on a shared 2-core machine (a deadline
# measured the machine's load, not the code).
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.lists(json_values, min_size=1, max_size=8))
def test_mutated_real_lines(rng: random.Random, replacements: list[Any]) -> None:
    if not REAL_LINES:
        return
    start = rng.randrange(len(REAL_LINES))
    window = [orjson.loads(line) for line in REAL_LINES[start : start + 40]]
    for replacement in replacements:
        i = rng.randrange(len(window))
        window[i] = _mutate(window[i], rng, replacement)
    check([orjson.dumps(v) for v in window])


def _beyond_floats(json_text: str) -> bool:
    """Whether orjson reads an integer of this text as a float (beyond 64 bits): such a value is
    safe once read, but only its text is exact."""
    return any(len(run) >= 20 for run in re.findall(r"[0-9]+", json_text))
