"""A line is parsed only if its parsed value stays within a small multiple of its text
(ingestor.normalize.parse_cost); the others are stored whole as their text, and the stream goes on."""

from __future__ import annotations

import base64
import subprocess
import sys
import tracemalloc
from pathlib import Path

import orjson
import pytest

from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.normalize.parse_cost import CHECK_FROM_BYTES, MAX_PARSED_RATIO, too_costly_to_parse

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

# Items repeated into one long line: dense in containers and small values, or mostly strings.
ITEMS = [
    b"[]",
    b"{}",
    b"[[[1]]]",
    b'{"a":1}',
    b'{"a":1,"b":"x","c":null}',
    b'{"id":123456,"name":"abcdefgh","ok":true}',
    b'{"id":123456,"name":"abcdefgh","ok":true,"a":"xxxxxxxxxxxx","b":1.5,"c":"yyyyyyyyyyyy","d":false}',
    b"0.5",
    b"1000",
    b"123456789",
    b'"ab"',
    b'"abcdef"',
    b'"a,b,c,[{,],}"',  # separators inside strings cost nothing
    b'"' + b"x" * 1000 + b'"',
    b'"escaped \\" quote, [and] \\\\"',
]


def long_line(item: bytes, size: int) -> bytes:
    return b'{"type":"x","items":[' + b",".join([item] * (size // (len(item) + 1))) + b"]}"


def retained_bytes(data: bytes) -> int:
    """Memory the parsed value of `data` keeps (tracemalloc's count of the live objects)."""
    tracemalloc.start()
    try:
        value = orjson.loads(data)
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del value
    return retained


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: item[:24].decode())
def test_a_long_line_is_parsed_only_if_its_value_stays_within_the_ratio(item: bytes) -> None:
    data = long_line(item, 1024 * 1024)
    if not too_costly_to_parse(data):
        assert retained_bytes(data) <= MAX_PARSED_RATIO * len(data)


def test_dense_lines_are_refused_and_string_heavy_ones_parsed() -> None:
    assert too_costly_to_parse(long_line(b"[]", 1024 * 1024))
    assert too_costly_to_parse(long_line(b'{"a":1}', 1024 * 1024))
    assert not too_costly_to_parse(long_line(b'"a,b,c,[{,],}"', 1024 * 1024))
    assert not too_costly_to_parse(long_line(b'"' + b"x" * 1000 + b'"', 1024 * 1024))
    # Short lines are never scanned, whatever they hold.
    assert not too_costly_to_parse(long_line(b"[]", CHECK_FROM_BYTES - 100))


def test_no_line_of_the_real_recordings_is_refused() -> None:
    long_lines = [
        line
        for path in FIXTURES.rglob("*.jsonl")
        for line in path.read_bytes().splitlines()
        if len(line) >= CHECK_FROM_BYTES
    ]
    assert len(long_lines) >= 5  # the large_output recordings: a command's output, a session's lines
    assert not any(map(too_costly_to_parse, long_lines))


def test_a_refused_line_is_stored_whole_as_text_and_the_stream_goes_on() -> None:
    dense = long_line(b"[]", 2 * 1024 * 1024)
    not_utf8 = long_line(b'"\xff"', 2 * 1024 * 1024)
    lines = [
        b'{"type":"thread.started","thread_id":"th-1"}',
        dense,
        not_utf8,
        b'{"type":"turn.started"}',
        # exec names a run's turn by its first line after turn.started (docs/operations.md)
        b'{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"hi"}}',
    ]
    normalizer = Normalizer("test")
    ops = [
        op for i, data in enumerate(lines) for op in normalizer.feed(Line("test", i, 1_763_780_000_000, data))
    ]
    events = [op["args"] for op in ops if op["op"] == "appendEvent"]
    assert [event["method"] for event in events] == [
        "thread.started",
        "ingestor/unparsed",
        "ingestor/unparsed",
        "turn.started",
        "item.completed",
    ]
    assert events[1]["payload"] == {"text": dense.decode()}
    assert events[2]["payload"] == {"base64": base64.b64encode(not_utf8).decode()}
    assert any(op["op"] == "upsertTurn" for op in ops)  # the next line's facts are read as ever
    assert normalizer.derive_errors == 0


def test_one_15_mib_line_of_empty_lists_stays_within_a_small_multiple_of_the_line(tmp_path: Path) -> None:
    """Replayed into SQLite in a process of its own: its peak RSS, measured by its parent."""
    source = tmp_path / "dense.jsonl"
    line = long_line(b"[]", 15 * 1024 * 1024)
    source.write_bytes(line + b"\n")
    db = tmp_path / "store.db"
    measure = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    replay = [sys.executable, "-m", "ingestor", "replay", str(source), "--sink", f"sqlite:{db}"]
    peak_kib = int(
        subprocess.run(
            [sys.executable, "-c", measure, *replay], check=True, capture_output=True, text=True, timeout=300
        ).stdout
    )
    # Measured: 530 MB when the line was parsed; 128 MB now, as much as a 15 MB string line takes.
    assert peak_kib * 1024 < 12 * len(line)
