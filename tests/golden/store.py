"""Fixtures through the normalizer into SQLite, and the stored rows in a reviewable form."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.ops import Op
from ingestor.sinks.sqlite.sink import apply_ops, connect

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
GOLDEN = Path(__file__).resolve().parent
T0 = 1_800_000_000_000

TABLES = (
    "conversations",
    "turns",
    "commands",
    "command_chunks",
    "messages",
    "reasoning_sections",
    "usage_snapshots",
    "rate_limits",
    "events_raw",
)
JSON_COLUMNS = frozenset({"command", "parsedCmd", "summaryText", "payload", "rawContent"})
LONG_TEXT = 200


def fixture_paths() -> list[Path]:
    """The recorded Codex streams and session files (first-contact/ holds input that is not Codex)."""
    return sorted(FIXTURES.glob("codex-*/**/*.jsonl"))


def golden_name(path: Path) -> str:
    """Session files are named by time and uuid, which change with every recording: they are named
    by their position in their directory instead."""
    rel = path.relative_to(FIXTURES)
    if rel.parts[1] == "sessions":
        index = sorted(path.parent.glob("*.jsonl")).index(path)
        rel = rel.parent / f"{index}.jsonl"
    return "__".join(rel.with_suffix("").parts) + ".json"


def fixture_lines(path: Path) -> list[Line]:
    """Framed as the daemon frames: one line per newline, a trailing CR removed."""
    source = f"file:{path.relative_to(FIXTURES).as_posix()}"
    pieces = path.read_bytes().split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    return [Line(source, i, T0 + i, p.removesuffix(b"\r")) for i, p in enumerate(pieces)]


def exec_run_streams(path: Path) -> list[bytes]:
    """An exec recording cut into the stdout of each `codex exec` process, by the sizes the recorder
    noted (manifest `observed.exec_run_bytes`)."""
    manifest = orjson.loads((FIXTURES / "manifest.json").read_bytes())
    (entry,) = [e for e in manifest["files"] if e["path"] == path.relative_to(FIXTURES).as_posix()]
    data = path.read_bytes()
    runs, start = [], 0
    for size in entry["observed"]["exec_run_bytes"]:
        runs.append(data[start : start + size])
        start += size
    assert start == len(data), path
    return runs


def normalize_fixture(path: Path) -> list[Op]:
    lines = fixture_lines(path)
    n = Normalizer(lines[0].source if lines else "empty")
    ops: list[Op] = []
    for line in lines:
        ops += n.feed(line)
    ops += n.finish()
    return ops


def open_store(ops: list[Op]) -> sqlite3.Connection:
    conn = connect(":memory:")
    apply_ops(conn, ops)
    return conn


def table_rows(conn: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    cursor = conn.execute(f"SELECT * FROM {table} ORDER BY id")  # insertion order
    names = [d[0] for d in cursor.description]
    out = []
    for values in cursor:
        row = {n: v for n, v in zip(names, values, strict=True) if v is not None and n != "id"}
        for name in JSON_COLUMNS & row.keys():
            row[name] = orjson.loads(row[name])
        out.append(row)
    return out


def stored_rows(ops: list[Op]) -> dict[str, list[dict[str, Any]]]:
    conn = open_store(ops)
    try:
        return {table: table_rows(conn, table) for table in TABLES}
    finally:
        conn.close()


def digest(data: bytes) -> dict[str, Any]:
    return {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _short(row: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for name, value in row.items():
        if name in drop:
            continue
        if type(value) is str and len(value) > LONG_TEXT:
            value = digest(value.encode())
        out[name] = value
    return out


def summarize(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The rows, minus what would only repeat the fixture: raw payloads and message/reasoning raw
    content (the lines themselves), keys (hashes), chunk bytes (kept as length and SHA-256 per call)."""
    out: dict[str, Any] = {}
    for table in (
        "conversations",
        "turns",
        "commands",
        "messages",
        "reasoning_sections",
        "usage_snapshots",
        "rate_limits",
    ):
        out[table] = [_short(r, ("key", "rawContent", "rawContentJson")) for r in rows[table]]
    chunks: dict[str, dict[str, Any]] = {}
    for row in rows["command_chunks"]:
        entry = chunks.setdefault(
            row["callId"], {"seqs": [], "streams": Counter(), "encoding": row.get("encoding"), "bytes": b""}
        )
        entry["seqs"].append(row["seq"])
        entry["streams"][row["stream"]] += 1
        entry["bytes"] += base64.b64decode(row["chunkBase64"])
    out["command_chunks"] = {
        call: {
            "chunks": len(e["seqs"]),
            "seqContiguous": sorted(e["seqs"]) == list(range(len(e["seqs"]))),
            "streams": dict(sorted(e["streams"].items())),
            "encoding": e["encoding"],
            **digest(e["bytes"]),
        }
        for call, e in chunks.items()
    }
    events = rows["events_raw"]
    out["events_raw"] = {
        "count": len(events),
        "methods": dict(sorted(Counter(e["method"] for e in events).items())),
        "turns": dict(sorted(Counter(e.get("turnId", "-") for e in events).items())),
        "conversations": dict(sorted(Counter(e["conversationId"] for e in events).items())),
        "payloadJson": sum(1 for e in events if "payloadJson" in e),
    }
    return out
