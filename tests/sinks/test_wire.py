"""The Convex encoding of ops and the safety check behind it (ingestor.sinks.wire)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.ops import EventArgs, Op
from ingestor.sinks.wire import convex_op, encode_op, is_convex_safe
from tests.golden.helpers import T0

_MAX_SAFE_INT = 2**53


def reference_safe(value: object, depth: int = 1) -> bool:
    """The rules of docs/operations.md read plainly: what the fast `is_convex_safe` must equal."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if depth > 14:
        return False
    if isinstance(value, list):
        return len(value) <= 8192 and all(reference_safe(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return len(value) <= 1024 and all(
            isinstance(k, str)
            and 0 < len(k) <= 1024
            and not k.startswith("$")
            and k.isascii()
            and k.isprintable()
            and reference_safe(v, depth + 1)
            for k, v in value.items()
        )
    return False


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        _nested(13),
        _nested(14),
        [{"a": _nested(12)}],
        list(range(8192)),
        list(range(8193)),
        {str(i): i for i in range(1024)},
        {str(i): i for i in range(1025)},
        {"k" * 1024: 1},
        {"k" * 1025: 1},
        2**53,
        2**53 + 1,
        -(2**53) - 1,
        {"$k": 1},
        {"": 1},
        {"é": 1},
        {"a\nb": 1},
        {"ok": [1.5, None, True, "x"]},
        {"ok": {"inner": 2**60}},
        float("nan"),
        (1, 2),
    ],
)
def test_safety_on_the_limits(value: Any) -> None:
    assert is_convex_safe(value) == reference_safe(value)


deep_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=4)
    | st.sampled_from(["$x", 2**53, 2**53 + 1]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=3) | st.sampled_from(["$a", "", "é", "\x7f", "ok", "a\tb"]), children, max_size=3
        )
    ),
    max_leaves=60,
)


@settings(max_examples=1000)
@given(deep_values)
def test_safety_equals_the_plain_reading_of_the_rules(value: Any) -> None:
    assert is_convex_safe(value) == reference_safe(value)


def _event(data: bytes) -> Op:
    n = Normalizer("t", conversation_id="c")
    ops = n.feed(Line("t", 0, T0, data)) + n.finish()  # held for a thread until the end
    (op,) = [op for op in ops if op["op"] == "appendEvent"]
    return op


def test_a_safe_payload_is_sent_as_the_lines_own_text() -> None:
    data = b'{"method": "item/agentMessage/delta",  "params": {"delta": "hi", "n": 1.50}}'
    op = _event(data)
    body = encode_op(op)
    assert data in body  # as it came, spaces and all: not a re-encoding
    sent = orjson.loads(body)
    assert sent["args"]["payload"] == op["args"]["payload"]
    assert sent == orjson.loads(orjson.dumps(op))  # the same value a plain encoding gives


@pytest.mark.parametrize(
    "data",
    [
        b'{"method": "x", "params": {"$bad": 1}}',
        b'{"method": "x", "params": {"big": 9007199254740993}}',
        b'{"method": "x", "params": {"huge": 123456789012345678901234567890}}',
        b'{"method": "x", "params": {"": 1}}',
    ],
)
def test_an_unsafe_payload_is_sent_as_its_exact_text(data: bytes) -> None:
    sent = orjson.loads(encode_op(_event(data)))["args"]
    assert "payload" not in sent
    assert sent["payloadJson"] == data.decode()


def test_a_payload_replaced_after_normalizing_is_encoded_from_the_value() -> None:
    op = _event(b'{"method": "x", "params": {}}')
    op["args"]["payload"] = {"$other": 1}  # the line's text no longer describes it
    sent = convex_op(op)["args"]
    assert orjson.loads(sent["payloadJson"]) == {"$other": 1}


def test_a_plain_dict_event_is_checked_too() -> None:
    args = {"conversationId": "c", "method": "m", "payload": {"$k": 1}, "receivedAt": 1}
    sent = convex_op({"op": "appendEvent", "key": "e:1", "args": args})["args"]
    assert sent["payloadJson"] == '{"$k":1}'
    assert type(args) is not EventArgs and "payload" in args  # the op itself is left as it was


def test_unsafe_any_columns_of_derived_ops_go_as_json_text() -> None:
    message: Op = {
        "op": "appendMessage",
        "key": "m:1",
        "args": {"turnId": "t", "role": "assistant", "content": "x", "rawContent": {"$k": 1}, "createdAt": 1},
    }
    command: Op = {"op": "upsertCommand", "key": "x:1", "args": {"callId": "c", "parsedCmd": [{"ok": 1}]}}
    assert convex_op(message)["args"]["rawContentJson"] == '{"$k":1}'
    assert "rawContent" not in convex_op(message)["args"]
    assert convex_op(command) is command  # nothing to change: the same op
