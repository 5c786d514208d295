"""`ingestor usage`: tokens used, from the stored usage snapshots, grouped by day, week, month,
session or model.

Codex reports usage as the thread's cumulative totals (input, cached input, output, reasoning); the
store keeps each distinct total once per thread (`docs/operations.md`), so a report Codex repeats
(0.63 sends every `token_count` twice, and a live stream and its session file tell the same ones)
is one snapshot. What a snapshot adds is its totals minus the conversation's previous snapshot's,
in capture order, except:

- A snapshot stored as `restarted` (Codex counted from zero there: 0.63 `exec resume` begins the
  cumulative total again in the same thread; docs/operations.md) counts in full, and so does one
  whose total went down in any counter (a restart no channel marked).
- A fork's totals go on from its parent's at the fork point (`docs/operations.md`, "Forks"): its
  first snapshot adds its totals minus what it inherited (the conversation's `forkedFromUsage`, on
  every row the readers give), so the parent's tokens are counted once, under the parent.

Total tokens are input + output (as Codex counts them: cached input is part of input, reasoning part
of output), so a snapshot without Codex's own `totalTokens` (0.63's exec stream) adds the same.
Times and dates are UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from ingestor.cli.prices import PRICES_AS_OF, cost_usd
from ingestor.sinks.base import HistoryReader

Row = dict[str, Any]
By = Literal["day", "week", "month", "session", "model"]
BY: Final[tuple[By, ...]] = ("day", "week", "month", "session", "model")

PAGE: Final = 1000
_SNAPSHOT_COUNTERS: Final = ("totalInputTokens", "cachedInputTokens", "outputTokens", "reasoningOutputTokens")
COUNTERS: Final = ("inputTokens", "cachedInputTokens", "outputTokens", "reasoningOutputTokens", "totalTokens")
UNKNOWN_MODEL: Final = "unknown"

Totals = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Increment:
    """What one snapshot adds: input, cached input, output and reasoning tokens."""

    conversation_id: str
    thread_id: str | None
    turn_id: str
    model: str
    captured_at: int
    tokens: Totals


async def read_snapshots(reader: HistoryReader) -> list[Row]:
    """Every usage snapshot, in arrival order."""
    rows: list[Row] = []
    cursor: str | None = None
    while True:
        page, cursor = await reader.list_usage(cursor, PAGE)
        rows.extend(page)
        if cursor is None:
            return rows


def _totals(row: Row, previous: Totals | None) -> Totals:
    # A counter a stream does not report (0.63's exec stream has no reasoning count) is unknown,
    # not zero: it keeps the previous value, so it neither adds nor looks like a restart.
    known = previous or (0, 0, 0, 0)
    values = [row.get(name) for name in _SNAPSHOT_COUNTERS]
    i, c, o, r = (v if isinstance(v, int) else known[n] for n, v in enumerate(values))
    return (i, c, o, r)


def inherited(snapshots: Sequence[Row]) -> Totals | None:
    """The totals a fork's snapshots start from: its `forkedFromUsage` (None: not a fork, or a fork
    whose beginning no ingesting process saw, counted from zero)."""
    for row in snapshots:
        base = row.get("forkedFromUsage")
        if isinstance(base, dict):
            return _totals(base, None)
    return None


def increments(rows: Sequence[Row]) -> list[Increment]:
    """What each snapshot adds, per conversation in capture order (arrival order among equal
    times)."""
    by_conversation: dict[str, list[Row]] = {}
    for row in rows:
        by_conversation.setdefault(row.get("conversationId") or row["turnId"], []).append(row)
    # Python's sort is stable: equal capture times keep arrival order.
    ordered = {cid: sorted(group, key=lambda r: r["capturedAt"]) for cid, group in by_conversation.items()}
    out: list[Increment] = []
    for conversation_id, snapshots in ordered.items():
        previous = inherited(snapshots)
        for row in snapshots:
            totals = _totals(row, previous)
            restarted = previous is not None and (
                row.get("restarted") is True or any(t < p for t, p in zip(totals, previous, strict=True))
            )
            added = totals if previous is None or restarted else _minus(totals, previous)
            previous = totals
            if any(added):
                out.append(
                    Increment(
                        conversation_id,
                        row.get("threadId"),
                        row["turnId"],
                        row.get("model") or UNKNOWN_MODEL,
                        row["capturedAt"],
                        added,
                    )
                )
    return out


def _minus(a: Totals, b: Totals) -> Totals:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3])


def _day(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()


def group_key(increment: Increment, by: By) -> tuple[tuple[str, Any], ...]:
    """The grouping columns of a report row (`date`; `conversationId` and `threadId`; `model`)."""
    day = _day(increment.captured_at)
    if by == "day":
        return (("date", day.isoformat()),)
    if by == "week":  # ISO weeks: the Monday they start on
        return (("date", (day - dt.timedelta(days=day.weekday())).isoformat()),)
    if by == "month":
        return (("date", day.strftime("%Y-%m")),)
    if by == "session":
        return (("conversationId", increment.conversation_id), ("threadId", increment.thread_id))
    return (("model", increment.model),)


def report(
    increments_: Iterable[Increment],
    by: By,
    since: dt.date | None = None,
    until: dt.date | None = None,
    with_cost: bool = False,
) -> list[Row]:
    """One row per group, in key order (sessions: by their first use), `since`..`until` inclusive."""
    groups: dict[tuple[tuple[str, Any], ...], list[Increment]] = {}
    for inc in sorted(increments_, key=lambda i: i.captured_at):
        day = _day(inc.captured_at)
        if (since is not None and day < since) or (until is not None and day > until):
            continue
        groups.setdefault(group_key(inc, by), []).append(inc)
    keys = list(groups) if by == "session" else sorted(groups, key=lambda k: tuple(str(v) for _, v in k))
    rows = []
    for key in keys:
        members = groups[key]
        sums = [sum(inc.tokens[i] for inc in members) for i in range(4)]
        row: Row = dict(key)
        row.update(zip(COUNTERS, [*sums, sums[0] + sums[2]], strict=True))
        if with_cost:
            row["costUSD"] = _cost(members)
        rows.append(row)
    return rows


def _cost(members: list[Increment]) -> float | None:
    total = 0.0
    for inc in members:
        cost = cost_usd(inc.model, inc.tokens[0], inc.tokens[1], inc.tokens[2])
        if cost is None:
            return None
        total += cost
    return round(total, 6)


_SHOWN_KEY: Final[dict[By, str]] = {
    "day": "date",
    "week": "date",
    "month": "date",
    "session": "threadId",  # the conversation id, when it is another, is in --json
    "model": "model",
}


def render(rows: list[Row], by: By, with_cost: bool) -> str:
    """A table, one group a line, then the total."""
    key_name = _SHOWN_KEY[by]
    header = [key_name, "input", "cached input", "output", "reasoning", "total"]
    if with_cost:
        header.append("cost USD (estimate)")
    table = [header]
    for row in rows:
        cells = [str(row.get(key_name) or row.get("conversationId")), *(f"{row[c]:,}" for c in COUNTERS)]
        if with_cost:
            cells.append(_money(row["costUSD"]))
        table.append(cells)
    total = ["total", *(f"{sum(row[c] for row in rows):,}" for c in COUNTERS)]
    if with_cost:
        costs = [row["costUSD"] for row in rows]
        total.append(_money(None if None in costs else sum(costs)))
    table.append(total)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    if with_cost:
        lines.append(
            f"cost: an estimate from the list prices of {PRICES_AS_OF} (ingestor/cli/prices.py), not a bill; "
            "- where a model has no price"
        )
    return "\n".join(line.rstrip() for line in lines)


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
