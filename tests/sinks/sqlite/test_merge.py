"""The upsert merge rules of docs/operations.md, rule by rule, as pure functions."""

from __future__ import annotations

import pytest

from ingestor.sinks.sqlite.merge import apply_upsert, merge_row, merge_status, new_row


def test_rule1_absent_or_null_never_erases() -> None:
    stored = {"turnId": "t", "model": "gpt", "error": "boom", "status": "running", "startedAt": 5}
    assert merge_row("turns", stored, {"turnId": "t", "model": None}) == stored
    assert apply_upsert("turns", stored, {"turnId": "t"}) == (stored, "duplicate")


def test_rule2_started_keeps_earliest_last_seen_and_ended_keep_latest() -> None:
    stored = {"conversationId": "c", "startedAt": 100, "lastSeenAt": 200}
    assert merge_row("conversations", stored, {"startedAt": 50, "lastSeenAt": 150}) == {
        "conversationId": "c",
        "startedAt": 50,
        "lastSeenAt": 200,
    }
    assert merge_row("conversations", stored, {"startedAt": 150, "lastSeenAt": 250})["lastSeenAt"] == 250
    turn = {"turnId": "t", "status": "succeeded", "startedAt": 1, "endedAt": 10}
    assert merge_row("turns", turn, {"endedAt": 5})["endedAt"] == 10
    assert merge_row("turns", turn, {"endedAt": 20})["endedAt"] == 20


@pytest.mark.parametrize(
    ("table", "stored", "incoming", "expected"),
    [
        # Not terminal yet: later information wins (rule 5), also moving between non-terminal states.
        ("turns", "running", "succeeded", "succeeded"),
        ("commands", "running", "started", "started"),
        ("commands", "started", "completed", "completed"),
        # A terminal status is never moved back.
        ("turns", "succeeded", "running", "succeeded"),
        ("turns", "failed", "running", "failed"),
        ("commands", "completed", "running", "completed"),
        ("commands", "declined", "started", "declined"),
        # For turns, an error or a cancellation after completion wins...
        ("turns", "succeeded", "failed", "failed"),
        ("turns", "succeeded", "canceled", "canceled"),
        ("turns", "failed", "canceled", "canceled"),
        # ...but not a success after a failure, and never for commands: the first terminal stays.
        ("turns", "failed", "succeeded", "failed"),
        ("turns", "canceled", "succeeded", "canceled"),
        ("commands", "completed", "failed", "completed"),
        ("commands", "failed", "completed", "failed"),
    ],
)
def test_rule3_terminal_status(table: str, stored: str, incoming: str, expected: str) -> None:
    assert merge_status(table, stored, incoming) == expected
    row = merge_row(table, {"status": stored}, {"status": incoming})
    assert row["status"] == expected


def test_rule4_known_argv_is_never_overwritten() -> None:
    stored = {"callId": "x", "command": ["ls", "-l"], "chunked": False}
    assert merge_row("commands", stored, {"command": ["bash", "-lc", "ls -l"]})["command"] == ["ls", "-l"]
    assert merge_row("commands", stored, {"command": []})["command"] == ["ls", "-l"]
    assert merge_row("commands", {"callId": "x", "command": []}, {"command": ["ls"]})["command"] == ["ls"]


def test_rule4_chunked_is_sticky() -> None:
    assert merge_row("commands", {"chunked": True}, {"chunked": False})["chunked"] is True
    assert merge_row("commands", {"chunked": False}, {"chunked": True})["chunked"] is True
    assert merge_row("commands", {"chunked": False}, {"chunked": False})["chunked"] is False


def test_rule5_present_values_replace() -> None:
    stored = {"callId": "x", "exitCode": 1, "stdout": "a", "cwd": "/"}
    merged = merge_row("commands", stored, {"exitCode": 0, "stdout": "b", "cwd": None})
    assert merged == {"callId": "x", "exitCode": 0, "stdout": "b", "cwd": "/"}


def test_rules_are_column_specific() -> None:
    # `command` and `chunked` are only special for commands; `status` has no terminal set elsewhere.
    assert merge_row("turns", {"command": ["a"]}, {"command": ["b"]})["command"] == ["b"]


def test_insert_defaults() -> None:
    assert new_row("turns", {"turnId": "t", "conversationId": "c", "startedAt": 3, "model": None}) == {
        "turnId": "t",
        "conversationId": "c",
        "startedAt": 3,
        "status": "running",
    }
    assert new_row("commands", {"callId": "x", "turnId": "t", "endedAt": 9}) == {
        "callId": "x",
        "turnId": "t",
        "endedAt": 9,
        "startedAt": 9,
        "command": [],
        "chunked": False,
    }
    assert new_row("conversations", {"conversationId": "c", "lastSeenAt": 7}) == {
        "conversationId": "c",
        "lastSeenAt": 7,
        "startedAt": 7,
    }
    assert new_row("conversations", {"conversationId": "c", "startedAt": 4}) == {
        "conversationId": "c",
        "startedAt": 4,
        "lastSeenAt": 4,
    }


def test_apply_upsert_reports_inserted_updated_duplicate() -> None:
    row, status = apply_upsert("turns", None, {"turnId": "t", "conversationId": "c", "startedAt": 1})
    assert status == "inserted"
    again, status = apply_upsert("turns", row, {"turnId": "t", "startedAt": 1})
    assert (again, status) == (row, "duplicate")
    _, status = apply_upsert("turns", row, {"turnId": "t", "status": "succeeded", "endedAt": 2})
    assert status == "updated"


def test_out_of_order_upserts_converge() -> None:
    """Completion before start (a late start line): the same row as in order."""
    start = {"callId": "x", "turnId": "t", "command": ["ls"], "status": "running", "startedAt": 10}
    end = {"callId": "x", "turnId": "t", "status": "completed", "exitCode": 0, "startedAt": 12, "endedAt": 20}
    in_order, _ = apply_upsert("commands", apply_upsert("commands", None, start)[0], end)
    reversed_, _ = apply_upsert("commands", apply_upsert("commands", None, end)[0], start)
    assert in_order == reversed_
    assert in_order["status"] == "completed"
    assert in_order["startedAt"] == 10
