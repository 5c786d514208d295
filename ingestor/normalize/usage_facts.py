"""Facts about usage, common to every stream kind: token-usage snapshots and rate-limit rows."""

from __future__ import annotations

from typing import Any, Final

from ingestor.lines import Line
from ingestor.normalize.facts import (
    conversation,
    file_under_thread,
    hold_for_turn,
    integer,
    number,
    put,
    thread_scope,
)
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
    s: State,
    line: Line,
    out: Ops,
    kind: str,
    turn_id: str | None,
    totals: UsageTotals,
    window: Any,
    at: int,
    restarted: bool,
) -> None:
    """A usage snapshot. Codex's totals are the thread's, cumulative: a snapshot's identity is its
    thread and its counts, wherever and however often it is told (0.63 sent each token_count twice,
    once more after the next turn began; v2, legacy, exec and the session file all tell the same
    totals), so it is one row, in the turn that first reported it. The total is left out of the
    identity: exec reports none, and it is the sum of the others.

    `restarted`: the totals count from zero here (`counts_from_zero`; 0.63 `exec resume` begins them
    again in the same thread), so a reader counts them in full. Not part of the identity: a channel
    that cannot see it tells the same fact."""
    args: dict[str, Any] = {"source": kind, "capturedAt": at}
    if restarted:
        args["restarted"] = True
    counts = [_key_number(number(value)) for value in totals]
    for name, value in zip(_USAGE_COLUMNS, totals, strict=True):
        put(args, name, number(value))
    put(args, "modelContextWindow", integer(window))
    op: Op = {"op": "appendUsageSnapshot", "key": make_key("u", thread_scope(s), *counts[:4]), "args": args}
    file_under_thread(s, op)
    hold_for_turn(s, out, turn_id, op)


def counts_from_zero(totals: UsageTotals, last: UsageTotals | None) -> bool:
    """The totals are all the last model call's (`last_token_usage` == `total_token_usage`): Codex
    counted from zero before that call, at a thread's first call and where 0.63 began again."""
    if last is None:
        return False
    counts = [number(value) for value in totals[:4]]
    return any(counts) and counts == [number(value) for value in last[:4]]


def fork_base(s: State, line: Line, out: Ops, totals: UsageTotals, last: UsageTotals | None, at: int) -> bool:
    """A fork's usage totals include its parent's at the fork point (its file does not copy the
    parent's lines, but its counts go on from the parent's). The first usage a stream hears of a fork
    it saw begin tells them: reported before the fork's first turn (app-server repeats the parent's
    totals there, naming the parent's turn), they are the totals as they stand; reported after, the
    totals less the last call's. Stored as the conversation's `forkedFromUsage`, which a usage reader
    subtracts (docs/operations.md). True when the report was only the parent's totals: no fact of the
    fork's own."""
    cur = s.cur
    if cur is None or not cur.fork_base_pending:
        return False
    cur.fork_base_pending = False
    inherited = cur.turn_id is None
    base: list[int | float | None]
    if inherited:
        base = [number(value) for value in totals]
    elif last is not None:
        base = [_minus(number(total), number(call)) for total, call in zip(totals, last, strict=True)]
    else:
        return False
    fork_usage = {name: value for name, value in zip(_USAGE_COLUMNS, base, strict=True) if value is not None}
    if fork_usage:
        conversation(s, line, out, at, fork_usage=fork_usage)
    return inherited


def _minus(total: int | float | None, call: int | float | None) -> int | float | None:
    return None if total is None or call is None or call > total else total - call


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
