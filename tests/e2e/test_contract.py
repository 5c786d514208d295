"""The facts both languages state agree: the Convex code's own definitions (read through
testing/contract/dump.ts) against the daemon's and the SQLite store's.

- Limits: what `ingest:applyBatch` and `ingest:stageBlobPart` accept (convex/lib/limits.ts) is what
  the Convex sink keeps to (sinks/convex/config.py, staging.py).
- Tables and columns: every SQLite table (sinks/sqlite/schema.py) is the Convex table of that name
  (convex/schema.ts), column for column, type for type, required for required. The differences are
  the deliberate ones, stated here: Convex keeps a value it cannot hold as JSON text in `<column>Json`
  (SQLite keeps all JSON as text, in the column itself), so such a column is optional there; Convex
  rows may spill large values to `blobs` (`spilled`, and the `blobs`/`stages` tables); SQLite's
  `threads` table is Convex's too.
- Staging: the columns the sink stages are ones Convex may spill (convex/lib/blobs.ts), of the op's table.
- Merge rules, written three times (convex/lib/merge.ts, sinks/sqlite/merge.py, and independently in
  tests/golden/reference_store.py): every combination of the values each rule looks at, stored row
  against incoming upsert, merges to the same row in all three.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ingestor.ops import OP_TABLE
from ingestor.sinks.convex.config import APPLY_BATCH_MAX_BYTES, APPLY_BATCH_MAX_OPS
from ingestor.sinks.convex.staging import STAGE_MIN_BYTES, STAGE_PART_BYTES, STAGEABLE
from ingestor.sinks.sqlite.merge import apply_upsert
from ingestor.sinks.sqlite.schema import TABLES
from tests.golden.reference_store import _merge as reference_merge

ROOT = Path(__file__).resolve().parents[2]
TSX = ROOT / "node_modules" / ".bin" / "tsx"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not TSX.exists() or shutil.which("node") is None, reason="needs node_modules (npm ci)"
    ),
]

CONVEX_TYPE = {"text": "string", "int": "number", "num": "number", "bool": "boolean", "strings": "array"}
"""A SQLite column kind as Convex's validator JSON names its type (`json` columns: `any`)."""
CONVEX_ONLY_TABLES = {"blobs", "stages"}
CONVEX_ONLY_FIELDS = {"spilled"}


@cache
def convex() -> dict[str, Any]:
    dumped = subprocess.run(
        [str(TSX), str(ROOT / "testing" / "contract" / "dump.ts")],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=120,
    )
    facts: dict[str, Any] = json.loads(dumped.stdout)
    return facts


def test_the_sink_keeps_to_the_limits_convex_accepts() -> None:
    limits = convex()["limits"]
    assert limits["MAX_BATCH_OPS"] == APPLY_BATCH_MAX_OPS
    assert limits["MAX_BATCH_BYTES"] == APPLY_BATCH_MAX_BYTES
    assert limits["BLOB_PART_BYTES"] == STAGE_PART_BYTES
    assert limits["INLINE_VALUE_BYTES"] == STAGE_MIN_BYTES


def test_every_table_is_the_same_in_both_stores() -> None:
    tables = convex()["tables"]
    assert set(tables) - set(TABLES) == CONVEX_ONLY_TABLES
    assert set(TABLES) <= set(tables)
    for name, table in TABLES.items():
        fields = tables[name]
        json_columns = {column.name for column in table.columns if column.kind == "json"}
        for column in table.columns:
            assert column.name in fields, f"{name}.{column.name}: not in convex/schema.ts"
            field = fields[column.name]
            # A JSON column holds any value in SQLite; Convex may type it (an object of known fields).
            expected = {"any", "object", "array"} if column.kind == "json" else {CONVEX_TYPE[column.kind]}
            assert field["fieldType"]["type"] in expected, f"{name}.{column.name}"
            may_be_json_text = column.kind == "json" and f"{column.name}Json" in fields
            if not may_be_json_text:
                assert field["optional"] is not column.required, f"{name}.{column.name}: required?"
        for field_name, field in fields.items():
            if field_name in CONVEX_ONLY_FIELDS or any(column.name == field_name for column in table.columns):
                continue
            # Otherwise only the JSON-text form of one of the table's JSON columns.
            assert field_name.removesuffix("Json") in json_columns, f"{name}.{field_name}: not in schema.py"
            assert field["fieldType"]["type"] == "string" and field["optional"], f"{name}.{field_name}"


def test_the_sink_stages_only_columns_convex_may_spill() -> None:
    spillable = convex()["spillable"]
    for op, columns in STAGEABLE.items():
        table = OP_TABLE[op]
        assert set(columns) <= set(spillable[table]), op


def test_the_check_reads_what_the_typescript_says() -> None:
    """The dump is Convex's, not a copy: it holds facts the Python side does not state."""
    facts = convex()
    assert facts["limits"]["MAX_STAGE_PARTS"] == 8192
    assert "spilled" in facts["tables"]["turns"]


TIMES = (None, 100, 200)
MERGE_CASES: dict[str, dict[str, tuple[Any, ...]]] = {
    "conversations": {"startedAt": TIMES, "lastSeenAt": TIMES, "threadId": (None, "a", "b")},
    "turns": {
        "status": (None, "running", "succeeded", "failed", "canceled", "interrupted"),
        "startedAt": TIMES,
        "endedAt": TIMES,
        "error": (None, "boom"),
    },
    "commands": {
        "status": (None, "running", "completed", "failed", "declined", "canceled"),
        "command": (None, [], ["ls"], ["pwd"]),
        "chunked": (None, False, True),
        "endedAt": TIMES,
    },
}
"""Per upsert table, the values each rule looks at (and an opaque column), absent (None) included."""
IDENTITY = {"conversations": "conversationId", "turns": "turnId", "commands": "callId"}


def _rows(table: str) -> list[dict[str, Any]]:
    columns = MERGE_CASES[table]
    rows = []
    for values in itertools.product(*columns.values()):
        row = {name: value for name, value in zip(columns, values, strict=True) if value is not None}
        rows.append({IDENTITY[table]: "x", "conversationId": "c", "turnId": "t", **row})
    return rows


def test_the_merge_rules_agree_in_all_three_places() -> None:
    cases: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = []
    for table in MERGE_CASES:
        rows = _rows(table)
        for incoming in rows:
            cases.append((table, None, incoming))
            cases += [(table, stored, incoming) for stored in rows]
    assert len(cases) > 10_000
    merged_by_convex = json.loads(
        subprocess.run(
            [str(TSX), str(ROOT / "testing" / "contract" / "merge.ts")],
            cwd=ROOT,
            input=json.dumps(cases).encode(),
            capture_output=True,
            check=True,
            timeout=300,
        ).stdout
    )
    for (table, stored, incoming), by_convex in zip(cases, merged_by_convex, strict=True):
        by_sqlite, _ = apply_upsert(table, stored, incoming)
        assert by_sqlite == by_convex, (table, stored, incoming)
        if stored is not None:
            by_reference = dict(stored)
            reference_merge(table, by_reference, incoming)
            assert by_reference == by_sqlite, (table, stored, incoming)
