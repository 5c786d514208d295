"""The hand-inlined fast paths against the general paths they restate, over every recorded line.

- The normalizer's `_process_v2` (an app-server v2 line, its steps inline) against `_process` (the
  general path every other line takes): the same ops, in the same order, and the same derive errors.
- The SQLite store's `plain_row_of` and `event_row` (appends built straight from the args) against
  `coerce_args` and the general row: the same rows, column for column, value for value, type for type.

Each fast path is switched off by replacing it with the general path; a difference on any line of any
recording fails. (Pure Python only: the compiled build's classes cannot be patched.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import ingestor.normalize as normalize_package
from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.normalize.state import V2
from ingestor.ops import Op
from ingestor.sinks.sqlite import apply as sqlite_apply
from ingestor.sinks.sqlite.apply import apply_ops
from ingestor.sinks.sqlite.schema import TABLES
from ingestor.sinks.sqlite.sink import connect

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
RECORDINGS = sorted(FIXTURES.rglob("*.jsonl"))
T0 = 1_800_000_000_000

pytestmark = pytest.mark.skipif(
    not normalize_package.__file__ or not normalize_package.__file__.endswith(".py"),
    reason="the compiled build's classes cannot be patched to take the general path",
)


def _lines(path: Path) -> list[Line]:
    return [
        Line(path.name, ordinal, T0 + ordinal, data)
        for ordinal, data in enumerate(path.read_bytes().splitlines())
    ]


class _GeneralPath(Normalizer):
    """Every line through `_process`, as if `_process_v2` did not exist."""

    def _process_v2(self, line: Line, method: str, obj: dict[str, Any], out: list[Op]) -> None:
        self._process(line, V2, method, obj, out)


def _per_line(normalizer: Normalizer, lines: list[Line]) -> Iterator[tuple[int, list[Op]]]:
    for line in lines:
        yield line.ordinal, normalizer.feed(line)
    yield -1, normalizer.finish()


def _comparable(ops: list[Op]) -> list[tuple[Any, ...]]:
    """The ops as the stores see them (a raw event's own line text included)."""
    return [
        (op["op"], op["key"], dict(op["args"]), getattr(op["args"], "line_json", None), sorted(op.items()))
        for op in ops
    ]


def test_the_fixtures_exercise_the_v2_fast_path() -> None:
    assert any("app-server" in str(path) for path in RECORDINGS)
    taken = 0

    class Counting(Normalizer):
        def _process_v2(self, line: Line, method: str, obj: dict[str, Any], out: list[Op]) -> None:
            nonlocal taken
            taken += 1
            super()._process_v2(line, method, obj, out)

    for path in RECORDINGS:
        normalizer = Counting(path.name)
        for _ in _per_line(normalizer, _lines(path)):
            pass
    assert taken > 500  # 805 v2 lines in the recordings of 2026-12


def _mutants(data: bytes) -> list[bytes]:
    """Variants of an app-server v2 line for the branches the recordings rarely take: no, odd or
    second-based times, another thread, no thread, an unknown method naming a (numeric) turn, and
    params that are not an object."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    params = obj.get("params") if type(obj) is dict else None
    method = obj.get("method") if type(obj) is dict else None
    if type(params) is not dict or type(method) is not str or method.startswith("codex/event/"):
        return []
    emitted = obj.get("emittedAtMs")
    variants: list[dict[str, Any]] = [
        {k: v for k, v in obj.items() if k != "emittedAtMs"},
        {**obj, "emittedAtMs": str(emitted)},
        {**obj, "params": {**params, "threadId": "another-thread"}},
        {**obj, "params": {k: v for k, v in params.items() if k != "threadId"}},
        {**obj, "method": "x/unknown", "params": {**params, "turnId": "7"}},
        {**obj, "method": "x/unknown", "params": {**params, "turnId": "t-9"}},
        {**obj, "params": [1]},
    ]
    if type(emitted) is int:
        variants.append({**obj, "emittedAtMs": emitted / 1000})
    return [orjson.dumps(variant) for variant in variants]


def _with_mutants(lines: list[Line]) -> list[Line]:
    mutated: list[Line] = []
    for line in lines:
        for data in [line.data, *_mutants(line.data)]:
            mutated.append(Line(line.source, len(mutated), T0 + len(mutated), data))
    return mutated


@pytest.mark.parametrize("mutants", [False, True], ids=["recorded", "with-mutants"])
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_process_v2_yields_what_the_general_path_does_on_every_line(path: Path, mutants: bool) -> None:
    lines = _with_mutants(_lines(path)) if mutants else _lines(path)
    fast, general = Normalizer(path.name), _GeneralPath(path.name)
    for (ordinal, fast_ops), (_, general_ops) in zip(
        _per_line(fast, lines), _per_line(general, lines), strict=True
    ):
        assert _comparable(fast_ops) == _comparable(general_ops), f"line {ordinal}"
        assert fast.derive_errors == general.derive_errors, f"line {ordinal}"


def _ops_of_every_recording() -> list[Op]:
    ops: list[Op] = []
    for path in RECORDINGS:
        normalizer = Normalizer(path.name)
        for _, line_ops in _per_line(normalizer, _lines(path)):
            ops += line_ops
    return ops


def _dump(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, each value with its SQLite type."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for name, table in TABLES.items():
        columns = ", ".join(f"{c}, typeof({c})" for c in table.column_names)
        tables[name] = conn.execute(f"SELECT {columns} FROM {name} ORDER BY rowid").fetchall()
    return tables


def test_the_stores_fast_rows_are_the_general_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ops = _ops_of_every_recording()
    assert sum(op["op"] == "appendEvent" for op in ops) > 1000

    fast = connect(tmp_path / "fast.db")
    fast_outcome = apply_ops(fast, ops)

    fast_paths_taken = 0
    real_event_row, real_plain_row_of = sqlite_apply.event_row, sqlite_apply.plain_row_of

    def general_only(*args: Any) -> None:
        nonlocal fast_paths_taken
        if (real_event_row if len(args) == 2 else real_plain_row_of)(*args) is not None:
            fast_paths_taken += 1
        return None  # the op takes the general path (`coerce_args`)

    monkeypatch.setattr(sqlite_apply, "event_row", general_only)
    monkeypatch.setattr(sqlite_apply, "plain_row_of", general_only)
    general = connect(tmp_path / "general.db")
    general_outcome = apply_ops(general, ops)

    assert fast_paths_taken > 1000
    assert fast_outcome.counts == general_outcome.counts
    assert fast_outcome.rejected == general_outcome.rejected
    fast_rows, general_rows = _dump(fast), _dump(general)
    for name in TABLES:
        assert fast_rows[name] == general_rows[name], name
