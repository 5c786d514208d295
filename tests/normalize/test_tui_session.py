"""The interactive TUI's session file (Codex 0.169 driven in tmux, testing/codex/record.py, mode
`tui`) is captured like any other: the same line types as app-server's session files, every line
read, the scripted turns, commands and replies stored."""

from __future__ import annotations

from typing import Any

import orjson

from ingestor.normalize import Normalizer
from ingestor.ops import Op
from tests.golden.store import FIXTURES, fixture_lines, stored_rows

[ENTRY] = [
    e
    for e in orjson.loads((FIXTURES / "manifest.json").read_bytes())["files"]
    if e["mode"] == "tui" and e["kind"] == "session"
]
TUI_FILE = FIXTURES / ENTRY["path"]


def line_types(path_glob: str) -> set[tuple[str, Any]]:
    types = set()
    for path in FIXTURES.glob(path_glob):
        for line in fixture_lines(path):
            obj = orjson.loads(line.data)
            types.add((obj["type"], obj["payload"].get("type")))
    return types


def test_the_recording_is_the_tuis_and_shows_the_scripted_work() -> None:
    meta = orjson.loads(fixture_lines(TUI_FILE)[0].data)["payload"]
    assert meta["originator"] == "codex-tui"
    screen = "\n".join(ENTRY["observed"]["screen"])
    for turn in ENTRY["facts"]["turns"]:
        assert turn["prompt"] in screen
        assert all(f"Ran {command['command']}" in screen for command in turn["commands"])
        assert all(message in screen for message in turn["agent_messages"])
    assert ENTRY["observed"]["side_requests"] >= 1  # its task-title requests, answered aside


def test_its_lines_are_of_the_kinds_app_server_session_files_have() -> None:
    tui = line_types(ENTRY["path"])
    app_server = line_types("codex-0.169.0/sessions/app-server-*/*.jsonl")
    assert tui <= app_server, tui - app_server


def test_it_is_stored_like_the_others() -> None:
    normalizer = Normalizer("file:tui")
    ops: list[Op] = []
    for line in fixture_lines(TUI_FILE):
        ops += normalizer.feed(line)
    ops += normalizer.finish()
    assert normalizer.derive_errors == 0
    rows = stored_rows(ops)
    [conversation] = rows["conversations"]
    assert conversation["clientName"] == "codex-tui"
    facts = ENTRY["facts"]
    assert [t["status"] for t in rows["turns"]] == ["succeeded"] * facts["turn_count"]
    expected = [c["command"] for turn in facts["turns"] for c in turn["commands"]]
    assert [c["command"][-1] for c in rows["commands"]] == expected
    assert [c["exitCode"] for c in rows["commands"]] == [0] * len(expected)
    replies = [m["content"] for m in rows["messages"] if m["role"] == "assistant"]
    assert replies == [message for turn in facts["turns"] for message in turn["agent_messages"]]
    assert len(rows["events_raw"]) == len({line.data for line in fixture_lines(TUI_FILE)})
