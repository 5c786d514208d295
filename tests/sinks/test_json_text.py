"""Values nested deeper than orjson writes (255) or Python recurses (~1,000) are stored whole, and
the rest of the input with them (ingestor.sinks.json_text, and every sink that writes JSON text)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.sinks.json_text import dumps_json
from ingestor.sinks.wire import encode_op
from tests.helpers.daemon import RECORDINGS

RECORDING = RECORDINGS / "app-server" / "command_outputs.jsonl"
CALL_ID = "call_command_outputs_001_1"


def nested(depth: int) -> Any:
    value: Any = [{"leaf": 2**70}, "x"]
    for level in range(depth - 1):
        value = [value] if level % 2 else {"k": value, "n": level}
    return value


def deep_recording(depth: int) -> tuple[bytes, str]:
    """The real recording with the first command's `commandActions` nesting `depth` levels deeper,
    and the text that value has in it."""
    deep = "[" * depth + "]" * depth
    lines = RECORDING.read_bytes().splitlines(keepends=True)
    for index, line in enumerate(lines):
        if b'"method":"item/completed"' in line and CALL_ID.encode() in line:
            lines[index] = line.replace(
                b'"commandActions":[', b'"commandActions":[' + deep.encode() + b",", 1
            )
            value = orjson.loads(lines[index])["params"]["item"]["commandActions"]
            return b"".join(lines), json.dumps(value, separators=(",", ":"))
    raise AssertionError("the recording has no completed command " + CALL_ID)


@pytest.mark.parametrize("depth", [300, 1023, 20_000])
def test_any_depth_is_written_exactly(depth: int) -> None:
    value = nested(depth)
    text = dumps_json(value)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), depth * 3))  # only the check below recurses
    assert json.loads(text) == value


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    )
)
def test_shallow_values_are_written_as_orjson_and_the_stdlib_agree(value: Any) -> None:
    text = dumps_json(value)
    assert json.loads(text) == value
    if all(-(2**63) <= n < 2**64 for n in _ints(value)):
        assert text == orjson.dumps(value).decode()


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [n for item in value for n in _ints(item)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _ints(item)]
    return []


@pytest.mark.parametrize("depth", [300, 1000])
def test_the_convex_encoding_carries_a_deep_value_as_text(depth: int) -> None:
    stream, value_text = deep_recording(depth)
    normalizer = Normalizer("deep")
    ops = [
        op for i, data in enumerate(stream.splitlines()) for op in normalizer.feed(Line("deep", i, 0, data))
    ]
    encoded = [orjson.loads(encode_op(op)) for op in ops]
    commands = [op["args"] for op in encoded if op["op"] == "upsertCommand" and "parsedCmdJson" in op["args"]]
    assert [args["parsedCmdJson"] for args in commands] == [value_text]


def ingestor(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args], capture_output=True, timeout=60, check=False
    )


@pytest.mark.parametrize("depth", [300, 1000])
def test_replay_stores_a_deeply_nested_line_and_every_other_line(tmp_path: Path, depth: int) -> None:
    stream, value_text = deep_recording(depth)
    source = tmp_path / "deep.jsonl"
    source.write_bytes(stream)
    db, jsonl = tmp_path / "store.db", tmp_path / "ops.jsonl"

    for sink in (f"sqlite:{db}", f"jsonl:{jsonl}"):
        done = ingestor("replay", str(source), "--sink", sink)
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events_raw").fetchone()[0] == len(stream.splitlines())
        (stored,) = conn.execute("SELECT parsedCmd FROM commands WHERE callId = ?", (CALL_ID,)).fetchone()
    assert stored == value_text
    sent = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    assert sum(op["op"] == "appendEvent" for op in sent) == len(stream.splitlines())
    assert [op["args"]["parsedCmdJson"] for op in sent if "parsedCmdJson" in op["args"]] == [value_text]

    with sqlite3.connect(db) as conn:
        (turn_id,) = conn.execute("SELECT turnId FROM commands WHERE callId = ?", (CALL_ID,)).fetchone()
    shown = ingestor("show", "turn", turn_id, "--json", "--sink", f"sqlite:{db}")
    assert shown.returncode == 0, shown.stderr.decode()[-2000:]
    commands = {row["callId"]: row for row in orjson.loads(shown.stdout)["commands"]}
    assert commands[CALL_ID]["parsedCmdJson"] == value_text
