"""Golden tests over every real recording in fixtures/.

Each fixture is fed through the normalizer (deterministic times: `receivedAt` = T0 + line number) and
its ops applied to a fresh SQLite store (the real sink's `apply_ops`); the stored rows, summarized
where they are bulky (output bytes, raw payloads), must equal tests/golden/<fixture>.json.

Regenerate after a deliberate change, then REVIEW the diff (those files are the contract):

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/e2e/test_golden.py

Fixture-independent checks (the manifest's facts, replay idempotence) live in test_golden_facts.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.golden.store import (
    FIXTURES,
    GOLDEN,
    fixture_paths,
    golden_name,
    normalize_fixture,
    stored_rows,
    summarize,
)

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
PATHS = fixture_paths()


@pytest.mark.parametrize("path", PATHS, ids=[p.relative_to(FIXTURES).as_posix() for p in PATHS])
def test_stored_rows_match_golden(path: Path) -> None:
    ops = normalize_fixture(path)
    got = summarize(stored_rows(ops))
    golden = GOLDEN / golden_name(path)
    text = orjson.dumps(got, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
    if UPDATE:
        golden.write_text(text)
        return
    if not golden.exists():
        pytest.fail(f"no expected rows for {path.name}: run with UPDATE_GOLDEN=1 and review {golden.name}")
    expected: Any = orjson.loads(golden.read_text())
    assert got == expected


def test_no_golden_file_without_its_fixture() -> None:
    names = {golden_name(p) for p in PATHS}
    orphans = sorted(p.name for p in GOLDEN.glob("*.json") if p.name not in names)
    if UPDATE:
        for name in orphans:
            (GOLDEN / name).unlink()
        return
    assert orphans == [], "fixtures were re-recorded or removed: UPDATE_GOLDEN=1 and review"
