"""The upsert merge rules of docs/operations.md as pure functions over rows (dicts of columns).

`convex/lib/merge.ts` implements the same rules for Convex (and tests/golden/reference_store.py
once more, independently): tests/e2e/test_contract.py checks that all three merge alike. Values the rules
do not look into (JSON columns, strings) are compared and copied as opaque values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from ingestor.ops import COMMAND_TERMINAL, TURN_TERMINAL

UPSERT_IDENTITY: Final[dict[str, str]] = {
    "conversations": "conversationId",
    "turns": "turnId",
    "commands": "callId",
}

MergeStatus = Literal["inserted", "updated", "duplicate"]

_EARLIEST: Final = frozenset({"startedAt"})
_LATEST: Final = frozenset({"lastSeenAt", "endedAt"})
# Rule 3: after a turn completed, an error or a cancellation may still arrive and wins.
_TURN_LATE_TERMINAL: Final = frozenset({"failed", "canceled"})


def merge_status(table: str, stored: Any, incoming: Any) -> Any:
    """Rule 3: a terminal status is never moved back; see the contract for the one exception."""
    terminal = TURN_TERMINAL if table == "turns" else COMMAND_TERMINAL
    if stored not in terminal:
        return incoming
    if table == "turns" and incoming in _TURN_LATE_TERMINAL:
        return incoming
    return stored


def merge_value(table: str, column: str, stored: Any, incoming: Any) -> Any:
    """The value a column gets when `incoming` (not None) meets `stored` (not None)."""
    if column in _EARLIEST:
        return min(stored, incoming)
    if column in _LATEST:
        return max(stored, incoming)
    if column == "status":
        return merge_status(table, stored, incoming)
    if column == "forkedFromUsage":
        return stored  # rule 7: the first stream that saw the fork begin told it
    if table == "commands":
        if column == "command":
            return stored if stored else incoming  # rule 4: a known argv is never overwritten
        if column == "chunked":
            return bool(stored) or bool(incoming)  # rule 4: sticky
    return incoming


def new_row(table: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The row an upsert inserts: its present values plus the contract's defaults."""
    row = {column: value for column, value in args.items() if value is not None}
    if "startedAt" not in row:
        fallback = row.get("endedAt", row.get("lastSeenAt"))
        if fallback is not None:
            row["startedAt"] = fallback
    if table == "turns":
        row.setdefault("status", "running")
    elif table == "commands":
        row.setdefault("command", [])
        row.setdefault("chunked", False)
    elif table == "conversations" and "startedAt" in row:
        row.setdefault("lastSeenAt", row["startedAt"])
    return row


def merge_row(table: str, stored: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """The stored row updated by an upsert's args (rules 1, 2, 3, 4, 5)."""
    merged = dict(stored)
    for column, incoming in args.items():
        if incoming is None:
            continue  # rule 1: absent never erases
        current = merged.get(column)
        merged[column] = incoming if current is None else merge_value(table, column, current, incoming)
    return merged


def apply_upsert(
    table: str, stored: Mapping[str, Any] | None, args: Mapping[str, Any]
) -> tuple[dict[str, Any], MergeStatus]:
    """The row after the upsert, and whether it was inserted, updated or left as it was."""
    if stored is None:
        return new_row(table, args), "inserted"
    merged = merge_row(table, stored, args)
    return merged, "duplicate" if merged == stored else "updated"
