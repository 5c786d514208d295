"""An embedded store read back for comparison: its rows without arrival times, in a canonical
order, and the store a one-shot `ingestor replay` of a file makes (what a live capture must equal)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Final

import orjson

from tests.golden.store import TABLES, table_rows
from tests.helpers.daemon import INGESTOR

ARRIVAL_COLUMNS: Final = frozenset({"receivedAt"})
"""When the daemon read a line: the only columns a live capture may differ in from a replay."""


def store(db: Path) -> dict[str, list[dict[str, Any]]]:
    conn = sqlite3.connect(db)
    try:
        return {
            table: [
                {k: v for k, v in row.items() if k not in ARRIVAL_COLUMNS} for row in table_rows(conn, table)
            ]
            for table in TABLES
        }
    finally:
        conn.close()


def as_sets(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    """Rows in a canonical order (a live capture writes in other batches, so other insertion order)."""
    return {
        table: sorted(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) for row in rs)
        for table, rs in rows.items()
    }


def replay_store(path: Path, db: Path) -> dict[str, list[bytes]]:
    subprocess.run(
        [*INGESTOR, "replay", str(path), "--sink", f"sqlite:{db}"], check=True, capture_output=True
    )
    return as_sets(store(db))


def untimed(db: Path) -> dict[str, list[bytes]]:
    """The store without its times: `codex exec --json` lines carry none, and a stream's last activity
    is when its last line arrived, which differ between a live capture and a replay."""
    rows = store(db)
    return as_sets(
        {t: [{k: v for k, v in r.items() if not k.endswith("At")} for r in rs] for t, rs in rows.items()}
    )
