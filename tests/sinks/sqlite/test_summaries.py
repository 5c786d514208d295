"""The embedded store's usage rows read page by page (ingestor/sinks/sqlite/summaries.py): every
snapshot once, in arrival order, whatever the page size, as one read of the whole table gives."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from ingestor.sinks.sqlite.summaries import usage_page
from tests.helpers.daemon import INGESTOR

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    db = tmp_path_factory.mktemp("usage") / "store.db"
    sessions = FIXTURES / "codex-0.169.0" / "sessions"
    subprocess.run(
        [*INGESTOR, "replay", str(sessions), "--sink", f"sqlite:{db}"], check=True, capture_output=True
    )
    return sqlite3.connect(db)


@pytest.mark.parametrize("count", [1, 2, 7, 1000])
def test_pages_give_every_snapshot_once_in_arrival_order(store: sqlite3.Connection, count: int) -> None:
    whole, last = usage_page(store, None, 1_000_000)
    assert last is None
    assert len(whole) == store.execute("SELECT count(*) FROM usage_snapshots").fetchone()[0] > 20
    paged, cursor, pages = [], None, 0
    while True:
        page, cursor = usage_page(store, cursor, count)
        assert len(page) <= count
        paged.extend(page)
        pages += 1
        if cursor is None:
            break
    assert paged == whole
    assert pages == len(whole) // count + 1
