"""Facts about usage, common to every stream kind: token-usage snapshots and rate-limit rows."""

from __future__ import annotations

from typing import Any, Final

from ingestor.lines import Line
from ingestor.normalize.facts import file_under_thread, hold_for_turn, integer, number, put, thread_scope
from ingestor.normalize.state import Ops, State
from ingestor.ops import Op, make_key

_USAGE_COLUMNS: Final = (
    "totalInputTokens",
    "cachedInputTokens",
    "outputTokens",
    "reasoningOutputTokens",
    "totalTokens",
)
UsageTotals = tuple[Any, Any, Any, Any, Any]
"""(input, cachedInput, output, reasoningOutput, total) tokens, thread-cumulative."""


def usage(
    s: State, line: Line, out: Ops, kind: str, turn_id: str | None, totals: UsageTotals, window: Any, at: int
) -> None:
    """A usage snapshot. Codex's totals are the thread's, cumulative: a snapshot's identity is its
    thread and its counts, wherever and however often it is told (0.63 sent each token_count twice,
    once more after the next turn began; v2, legacy, exec and the session file all tell the same
    totals), so it is one row, in the turn that first reported it. The total is left out of the
    identity: exec reports none, and it is the sum of the others."""
    args: dict[str, Any] = {"source": kind, "capturedAt": at}
    counts = [_key_number(number(value)) for value in totals]
    for name, value in zip(_USAGE_COLUMNS, totals, strict=True):
        put(args, name, number(value))
    put(args, "modelContextWindow", integer(window))
    op: Op = {"op": "appendUsageSnapshot", "key": make_key("u", thread_scope(s), *counts[:4]), "args": args}
    file_under_thread(s, op)
    hold_for_turn(s, out, turn_id, op)


def _key_number(value: int | float | None) -> int | float | None:
    """A number as keys spell it: 11.0 and 11 are one value (Codex writes percentages either way)."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


_DAY_MINUTES: Final = 24 * 60


def window_scope(minutes: Any, position: str) -> str:
    """`primary` for a short window (at most a day: the 5-hour limit), `secondary` for a longer one
    (the weekly limit). Codex has swapped which window it reports in which slot, so the duration decides;
    the slot only decides when the duration is unknown."""
    n = number(minutes)
    if n is not None:
        return "primary" if n <= _DAY_MINUTES else "secondary"
    return position


def window_row(position: str, used: Any, minutes: Any, resets_at_ms: int | None) -> dict[str, Any]:
    row: dict[str, Any] = {"scope": window_scope(minutes, position)}
    put(row, "usedPercent", number(used))
    put(row, "windowMinutes", number(minutes))
    put(row, "resetsAt", resets_at_ms)
    return row


def credits_row(credits: Any) -> dict[str, Any] | None:
    if type(credits) is not dict:
        return None
    row: dict[str, Any] = {"scope": "credits"}
    balance = credits.get("balance")
    if balance is not None:
        row["balance"] = balance if type(balance) is str else str(balance)
    for src, dst in (("unlimited", "unlimited"), ("hasCredits", "hasCredits"), ("has_credits", "hasCredits")):
        if type(credits.get(src)) is bool:
            row[dst] = credits[src]
    return row


RESETS_IN: Final = "resetsInSeconds"
"""Key-only field of a row whose reset time Codex gave relative to now: `resetsAt` then depends on when
the line was read, so the key uses the relative value and a replay still dedupes."""
_RATE_FIELDS: Final = (
    "scope",
    "usedPercent",
    "windowMinutes",
    "resetsAt",
    "balance",
    "unlimited",
    "hasCredits",
)


_NUMBER_FIELDS: Final = frozenset({"usedPercent", "windowMinutes"})


def rate_limits(
    s: State, line: Line, out: Ops, kind: str, rows: list[dict[str, Any]], turn_id: str | None, at: int
) -> None:
    """Rate-limit rows, in the named turn, else the current (or last) one (`hold_for_turn`).

    A window's identity is its thread and its values: a report repeated, by any channel, is one row.
    Channels round differently (app-server 0.63's v2 copy said 41% where the legacy copy and the
    session file said 40.5%), which no key can merge: the store keeps the rows of one channel per
    thread, the first to report (`channel`), so no mix of channels stores more than one would."""
    scope = thread_scope(s)
    for row in rows:
        args = {name: value for name, value in row.items() if name != RESETS_IN}
        args["capturedAt"] = at
        parts = [_key_number(row.get(f)) if f in _NUMBER_FIELDS else row.get(f) for f in _RATE_FIELDS]
        if RESETS_IN in row:
            parts[_RATE_FIELDS.index("resetsAt")] = ("in", row[RESETS_IN])
        op: Op = {"op": "appendRateLimit", "key": make_key("l", scope, *parts), "args": args, "channel": kind}
        file_under_thread(s, op)
        hold_for_turn(s, out, turn_id, op)
