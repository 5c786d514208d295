"""`ingestor.cli.usage` on hand-made snapshot rows: the counting rules one at a time (the recordings'
end-to-end numbers are in test_usage.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ingestor.cli import usage
from ingestor.cli.prices import PRICES, cost_usd

DAY = 86_400_000
T0 = 1_795_300_000_000  # 2026-11-21


def snap(
    at: int, i: int, c: int, o: int, r: int | None, conversation: str = "c", **extra: Any
) -> dict[str, Any]:
    row = {
        "turnId": f"{conversation}/t",
        "conversationId": conversation,
        "threadId": conversation,
        "capturedAt": at,
    }
    row.update(totalInputTokens=i, cachedInputTokens=c, outputTokens=o, **extra)
    if r is not None:
        row["reasoningOutputTokens"] = r
    return row


def totals(i: int, c: int, o: int, r: int) -> dict[str, int]:
    """A conversation's `forkedFromUsage`, as the readers give it."""
    return {"totalInputTokens": i, "cachedInputTokens": c, "outputTokens": o, "reasoningOutputTokens": r}


def tokens(rows: list[dict[str, Any]]) -> list[tuple[int, ...]]:
    return [inc.tokens for inc in usage.increments(rows)]


def test_cumulative_totals_become_what_each_snapshot_adds() -> None:
    rows = [snap(T0, 1100, 0, 25, 3), snap(T0 + 1, 2300, 200, 55, 9), snap(T0 + 2, 3600, 400, 90, 18)]
    assert tokens(rows) == [(1100, 0, 25, 3), (1200, 200, 30, 6), (1300, 200, 35, 9)]


def test_arrival_order_does_not_matter_capture_time_does() -> None:
    rows = [snap(T0 + 2, 3600, 400, 90, 18), snap(T0, 1100, 0, 25, 3), snap(T0 + 1, 2300, 200, 55, 9)]
    assert sum(t[0] for t in tokens(rows)) == 3600


def test_a_total_that_goes_down_restarted_and_counts_in_full() -> None:
    # 0.63 exec resume: 1100, 2300 | 1300, 2700 | 1500 (the model server's calls 1..5).
    rows = [snap(T0 + n, i, 0, 0, 0) for n, i in enumerate((1100, 2300, 1300, 2700, 1500))]
    assert [t[0] for t in tokens(rows)] == [1100, 1200, 1300, 1400, 1500]


def test_a_snapshot_stored_restarted_counts_in_full_even_above_the_previous_total() -> None:
    # 0.63 exec resume, one total per run: 2300 | restarted 2700 (the model server's 1100+1200 | 1300+1400).
    rows = [snap(T0, 2300, 200, 55, 9, restarted=True), snap(T0 + 1, 2700, 400, 75, 21, restarted=True)]
    assert tokens(rows) == [(2300, 200, 55, 9), (2700, 400, 75, 21)]
    unmarked = [snap(T0, 2300, 200, 55, 9), snap(T0 + 1, 2700, 400, 75, 21)]
    assert tokens(unmarked) == [(2300, 200, 55, 9), (400, 200, 20, 12)]


def test_a_counter_a_stream_does_not_report_is_unknown_not_a_restart() -> None:
    # A session file's snapshot (reasoning 9), then an exec stream's without reasoning.
    rows = [snap(T0, 2300, 200, 55, 9), snap(T0 + 1, 5000, 600, 130, None)]
    assert tokens(rows) == [(2300, 200, 55, 9), (2700, 400, 75, 0)]


def test_conversations_are_counted_apart() -> None:
    rows = [snap(T0, 100, 0, 10, 0, "a"), snap(T0 + 1, 50, 0, 5, 0, "b"), snap(T0 + 2, 300, 0, 30, 0, "a")]
    report = usage.report(usage.increments(rows), "session")
    assert [(r["conversationId"], r["inputTokens"], r["totalTokens"]) for r in report] == [
        ("a", 300, 330),
        ("b", 50, 55),
    ]


def test_a_fork_counts_from_what_it_inherited() -> None:
    """A fork's totals go on from its parent's: its first snapshot adds only the tokens beyond them."""
    inherited = totals(2300, 200, 55, 9)
    parent = [snap(T0, 1100, 0, 25, 3, "p"), snap(T0 + 1, 2300, 200, 55, 9, "p")]
    fork = [
        snap(T0 + 7, 3600, 400, 90, 18, "f", forkedFromUsage=inherited),
        snap(T0 + 8, 5000, 600, 120, 20, "f", forkedFromUsage=inherited),
    ]
    assert tokens(parent + fork) == [
        (1100, 0, 25, 3),
        (1200, 200, 30, 6),
        (1300, 200, 35, 9),
        (1400, 200, 30, 2),
    ]
    # Without the link, the parent's tokens are counted again under the fork: what it is for.
    unlinked = [{k: v for k, v in row.items() if k != "forkedFromUsage"} for row in fork]
    assert sum(t[0] for t in tokens(parent + unlinked)) == 2300 + 5000


def test_a_forks_link_on_any_of_its_rows_is_its_baseline() -> None:
    """A reader gives the link on every row of the conversation; a row read before the link was
    stored (a store still filling) has none, and the link on the others still applies."""
    inherited = totals(1000, 0, 10, 0)
    rows = [snap(T0, 1500, 0, 15, 0, "f"), snap(T0 + 1, 2000, 0, 20, 0, "f", forkedFromUsage=inherited)]
    assert tokens(rows) == [(500, 0, 5, 0), (500, 0, 5, 0)]


def test_a_fork_of_a_fork_counts_only_its_own() -> None:
    """Each inherited its parent's totals, which include the grandparent's: every token once."""
    rows = [
        snap(T0, 1000, 0, 10, 0, "a"),
        snap(T0 + 1, 1500, 0, 15, 0, "b", forkedFromUsage=totals(1000, 0, 10, 0)),
        snap(T0 + 2, 1800, 0, 18, 0, "c", forkedFromUsage=totals(1500, 0, 15, 0)),
    ]
    by_session = usage.report(usage.increments(rows), "session")
    own = [(r["conversationId"], r["inputTokens"]) for r in by_session]
    assert own == [("a", 1000), ("b", 500), ("c", 300)]


def test_a_fork_that_inherited_nothing_counts_from_zero() -> None:
    """A sub-agent is linked as a fork but starts from zero (`forkedFromUsage` all 0)."""
    zero = totals(0, 0, 0, 0)
    assert tokens([snap(T0, 1300, 200, 35, 9, "s", forkedFromUsage=zero)]) == [(1300, 200, 35, 9)]


def test_grouping_by_day_week_month_and_the_date_range() -> None:
    rows = [snap(T0, 100, 0, 1, 0), snap(T0 + DAY, 300, 0, 3, 0), snap(T0 + 3 * DAY, 600, 0, 6, 0)]
    added = usage.increments(rows)
    days = usage.report(added, "day")
    assert [(d["date"], d["inputTokens"]) for d in days] == [
        ("2026-11-21", 100),
        ("2026-11-22", 200),
        ("2026-11-24", 300),
    ]
    weeks = usage.report(added, "week")  # ISO weeks start on Monday: 2026-11-16 and 2026-11-23
    assert [(w["date"], w["inputTokens"]) for w in weeks] == [("2026-11-16", 300), ("2026-11-23", 300)]
    assert [m["date"] for m in usage.report(added, "month")] == ["2026-11"]
    between = usage.report(added, "day", since=dt.date(2026, 11, 22), until=dt.date(2026, 11, 22))
    assert [(d["date"], d["inputTokens"]) for d in between] == [("2026-11-22", 200)]


def test_cost_is_an_estimate_from_the_table_and_absent_for_unpriced_models() -> None:
    price = PRICES["gpt-5"]
    assert (
        cost_usd("gpt-5", 1_000_000, 400_000, 100_000)
        == 600_000 * price.input / 1e6 + 400_000 * (price.cached_input / 1e6) + 100_000 * price.output / 1e6
    )
    assert cost_usd("mock-model", 1, 0, 1) is None
    rows = [snap(T0, 1_000_000, 0, 0, 0, model="gpt-5"), snap(T0, 10, 0, 0, 0, "m", model="mock-model")]
    by_model = {r["model"]: r for r in usage.report(usage.increments(rows), "model", with_cost=True)}
    assert by_model["gpt-5"]["costUSD"] == price.input and by_model["mock-model"]["costUSD"] is None
    text = usage.render(list(by_model.values()), "model", with_cost=True)
    assert "estimate" in text and "\ntotal" in text
