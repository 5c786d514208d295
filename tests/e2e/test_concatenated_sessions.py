"""Session files concatenated into one stream (`cat rollout-*.jsonl | ingestor run`, or an archive
gathered into one file) store what the files store replayed one by one: each `session_meta` of another
thread begins the next session, except a sub-agent's copy of its parent's history (raw events only).
Every row the same, every column."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.helpers.sqlite_store import replay_store

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.mark.parametrize("version", ["0.169.0", "0.63.0"])
def test_concatenated_session_files_store_what_the_files_store(version: str, tmp_path: Path) -> None:
    files = sorted((FIXTURES / f"codex-{version}" / "sessions").rglob("*.jsonl"))
    assert len(files) > 10
    one = tmp_path / "all.jsonl"
    one.write_bytes(b"".join(f.read_bytes() for f in files))
    concatenated = replay_store(one, tmp_path / "one.db")
    directory = tmp_path / "sessions"
    directory.mkdir()
    for i, f in enumerate(files):
        (directory / f"{i:03}-{f.name}").write_bytes(f.read_bytes())
    separate = replay_store(directory, tmp_path / "files.db")
    assert {t: len(r) for t, r in concatenated.items()} == {t: len(r) for t, r in separate.items()}
    assert concatenated == separate
    assert len(concatenated["conversations"]) == len(files)


@pytest.mark.parametrize("bad_id", ["", "x" * 5000])
def test_a_session_meta_with_an_unusable_id_begins_no_session(bad_id: str, tmp_path: Path) -> None:
    """Hostile input: a later `session_meta` whose id no conversation can carry is kept raw, its lines
    those of no new conversation (as a sub-agent's copied history is)."""
    first = sorted((FIXTURES / "codex-0.169.0" / "sessions").rglob("*.jsonl"))[0]
    lines = first.read_bytes().splitlines(keepends=True)
    meta = orjson.loads(lines[0])
    meta["payload"]["id"] = bad_id
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(b"".join(lines) + orjson.dumps(meta) + b"\n")
    rows = replay_store(stream, tmp_path / "store.db")
    assert len(rows["conversations"]) == 1
    assert len(rows["events_raw"]) == len(lines) + 1
