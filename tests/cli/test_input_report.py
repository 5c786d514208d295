"""Input that is not Codex (ingestor.cli.input_report, the replay's skipping in ingestor.sources.files):
stored as the contract says, but reported with counts and a hint. On real output of the real CLI:
`codex exec` without --json, and a whole CODEX_HOME (`~/.codex`) given to replay."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from ingestor.cli.input_report import EXEC_HINT, READS_HINT, report
from ingestor.pipeline import NotCodexStream, PipelineStats
from ingestor.sources.files import SkippedFile, not_json_lines

REPO = Path(__file__).resolve().parents[2]
FIRST_CONTACT = REPO / "fixtures" / "first-contact"
CODEX_HOME = FIRST_CONTACT / "codex-0.169.0" / "codex-home"


def ingestor(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEX_")}
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args, "--log-level", "error"],
        input=stdin.decode(errors="surrogateescape"),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def methods(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT method FROM events_raw ORDER BY id")]


@pytest.mark.parametrize("version", ["0.169.0", "0.63.0"])
def test_codex_exec_without_json_is_stored_raw_and_reported(version: str, tmp_path: Path) -> None:
    text = (FIRST_CONTACT / f"codex-{version}" / "exec-text.txt").read_bytes()
    lines = text.splitlines()
    nonempty = [line for line in lines if line]  # empty lines are skipped
    result = ingestor("run", "--sink", f"sqlite:{tmp_path / 'db'}", stdin=text)
    assert result.returncode == 0, result.stderr
    # Each line stored raw; a line repeated byte for byte ("--------") is that line again: once.
    assert methods(tmp_path / "db") == ["ingestor/invalidJson"] * len(set(nonempty))
    assert result.stderr.splitlines() == [
        f"ingestor: {len(nonempty)} input lines are not Codex JSON ({len(nonempty)} not JSON), in 1 stream: "
        f"stdin ({len(nonempty)} of {len(lines)} lines); stored raw as events, nothing derived from them",
        f"ingestor: {EXEC_HINT}",
    ]


def _sqlite_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.read_bytes()[:16] == b"SQLite format 3\0")


def test_replay_of_a_codex_home_skips_its_databases_and_points_at_its_sessions(tmp_path: Path) -> None:
    databases = _sqlite_files(CODEX_HOME)
    assert len(databases) >= 5  # what Codex 0.169 keeps beside sessions/
    result = ingestor("replay", str(CODEX_HOME), "--sink", f"sqlite:{tmp_path / 'db'}")
    assert result.returncode == 0, result.stderr
    shown = ", ".join(str(p) for p in databases[:3])
    text_files = [CODEX_HOME / "config.toml", CODEX_HOME / "installation_id"]
    bad = sum(1 for path in text_files for line in path.read_bytes().splitlines() if line)
    assert result.stderr.splitlines() == [
        f"ingestor: skipped {len(databases)} files that are not JSON lines ({len(databases)} SQLite "
        f"databases): {shown}, ...",
        f"ingestor: {bad} input lines are not Codex JSON ({bad} not JSON), in 2 streams: "
        f"{text_files[0]} ({bad - 1} of {len(text_files[0].read_bytes().splitlines())} lines), "
        f"{text_files[1]} (1 of 1 line); stored raw as events, nothing derived from them",
        f"ingestor: hint: {CODEX_HOME} looks like a Codex home: its session files are in "
        f"{CODEX_HOME}/sessions (ingestor replay {CODEX_HOME}/sessions)",
    ]
    stored = methods(tmp_path / "db")
    assert stored.count("ingestor/invalidJson") == bad
    assert "session_meta" in stored  # the session file itself is stored as usual
    with sqlite3.connect(tmp_path / "db") as conn:
        raw = conn.execute("SELECT count(*) FROM events_raw WHERE payload LIKE '%SQLite format%'").fetchone()
    assert raw == (0,)


def test_replay_of_the_sessions_directory_says_nothing_more(tmp_path: Path) -> None:
    result = ingestor("replay", str(CODEX_HOME / "sessions"), "--sink", f"sqlite:{tmp_path / 'db'}")
    assert result.returncode == 0
    assert result.stderr == ""


def test_json_no_stream_kind_explains(tmp_path: Path) -> None:
    result = ingestor("run", "--sink", f"sqlite:{tmp_path / 'db'}", stdin=b'{"hello": 1}\n[1, 2]\n')
    assert result.returncode == 0
    assert methods(tmp_path / "db") == ["ingestor/unknown"] * 2
    assert result.stderr.splitlines() == [
        "ingestor: 2 input lines are not Codex JSON (2 JSON of no Codex stream kind), in 1 stream: "
        "stdin (2 of 2 lines); stored raw as events, nothing derived from them",
        f"ingestor: {READS_HINT}",
    ]


def test_binary_and_compressed_databases_are_skipped_text_is_not(tmp_path: Path) -> None:
    database = _sqlite_files(CODEX_HOME)[0].read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp_path / "in/b.sqlite.zst").write_bytes(zstandard.ZstdCompressor().compress(database))
    (tmp_path / "in/c.txt").write_bytes("caf\xe9 latin-1, no NUL\n".encode("latin-1"))
    result = ingestor("replay", str(tmp_path / "in"), "--sink", f"sqlite:{tmp_path / 'db'}")
    assert result.returncode == 0
    assert result.stderr.splitlines()[0] == (
        f"ingestor: skipped 2 files that are not JSON lines (1 binary file, 1 SQLite database): "
        f"{tmp_path}/in/a.png, {tmp_path}/in/b.sqlite.zst"
    )
    assert methods(tmp_path / "db") == ["ingestor/invalidJson"]  # c.txt: not clearly binary, so stored


def test_what_is_clearly_not_json_lines() -> None:
    assert not_json_lines(b"SQLite format 3\0rest") == "SQLite database"
    assert not_json_lines(b'{"a": 1}\n\0') == "binary file"
    assert not_json_lines(b'{"a": "\\u0000"}\n') is None  # an escaped NUL is JSON
    assert not_json_lines(b"\xff\xfe not utf-8\n") is None
    assert not_json_lines(b"") is None


def test_report_names_the_first_streams_and_how_many_more() -> None:
    stats = PipelineStats(not_json_lines=7, unknown_lines=0)
    examples = [NotCodexStream(f"unix:/s#{n}", lines=2, not_json=1, unknown=0) for n in range(5)]
    lines = report(stats, 7, examples)
    assert lines[0] == (
        "ingestor: 7 input lines are not Codex JSON (7 not JSON), in 7 streams: unix:/s#0 (1 of 2 lines), "
        "unix:/s#1 (1 of 2 lines), unix:/s#2 (1 of 2 lines) and 4 more; stored raw as events, nothing "
        "derived from them"
    )
    assert lines[1:] == [f"ingestor: {READS_HINT}"]
    assert report(PipelineStats(lines=10), 0, []) == []
    assert report(PipelineStats(), 0, [], [SkippedFile("/x/y", "binary file")]) == [
        "ingestor: skipped 1 file that are not JSON lines (1 binary file): /x/y",
        f"ingestor: {READS_HINT}",
    ]
