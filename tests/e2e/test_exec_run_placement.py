"""Where an `exec --json` run lands in its thread when its channels do not bring the thread from
its first turn, in order (docs/operations.md, Limits: "exec runs are placed by their order").
Reproduced with the real Codex CLI and the recordings; strict xfails until the store places a run
by content evidence (below), so that each flips to a failure the day it is fixed."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from tests.golden.store import FIXTURES, exec_run_streams
from tests.helpers.convex_e2e import CODEX_JS, needs_codex

pytestmark = pytest.mark.e2e

INGESTOR: Final = [sys.executable, "-m", "ingestor"]
TUI_SESSION: Final = next((FIXTURES / "codex-0.169.0/sessions/tui-tui_commands").glob("rollout-*.jsonl"))
TUI_THREAD: Final = TUI_SESSION.stem[-36:]
EVIDENCE: Final = (
    "a run is the thread's next exec run by arrival, matched to the session file's turns by that "
    "ordinal; the content that would place it (its cumulative usage at turn.completed, which is the "
    "session file's total at the end of the same turn) arrives after its items are stored, and moving "
    "them is not built"
)


def _ingest(db: Path, data: bytes) -> None:
    """`codex exec --json ... | ingestor run`: one daemon per run."""
    result = subprocess.run(
        [*INGESTOR, "run", "--sink", f"sqlite:{db}"],
        input=data,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]


def _replay(db: Path, path: Path) -> None:
    result = subprocess.run(
        [*INGESTOR, "replay", str(path), "--sink", f"sqlite:{db}"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]


def _turns(db: Path) -> list[tuple[int, list[str]]]:
    """Each turn's ordinal and its messages, in turn order."""
    with sqlite3.connect(db) as conn:
        turns = conn.execute("SELECT turnId, turnNumber FROM turns ORDER BY turnNumber").fetchall()
        return [
            (number, [m for (m,) in conn.execute("SELECT content FROM messages WHERE turnId = ?", (turn,))])
            for turn, number in turns
        ]


@pytest.fixture(scope="module")
def tui_resumes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[bytes, bytes, Path]]:
    """Two `codex exec resume <id> --json` runs of a thread begun in the interactive TUI (its recorded
    session file), whose first line after `turn.started` is byte for byte the same (the same first
    command, no reasoning before it); and the session file they appended to."""
    if not CODEX_JS.is_file():
        pytest.skip(
            "testing/codex/node_modules missing (the real Codex CLI): run `npm ci --prefix testing/codex`"
        )
    from testing.codex.model_server import Message, ModelServer, Shell, Step, codex_config_toml

    work = tmp_path_factory.mktemp("tui-resumes")
    home, cwd = work / "home", work / "cwd"
    cwd.mkdir()
    sessions = home / "sessions/2026/12/05"
    sessions.mkdir(parents=True)
    shutil.copy(TUI_SESSION, sessions / TUI_SESSION.name)
    script = [Step([Shell("ls")]), Step([Message("listed")]), Step([Shell("ls")]), Step([Message("listed")])]
    runs = []
    with ModelServer(script, name="tui-resumes") as model:
        (home / "config.toml").write_text(codex_config_toml(model.base_url))
        for prompt in ("List the files.", "List them again."):
            argv = ["node", str(CODEX_JS), "exec", "--json", "--skip-git-repo-check", "-C", str(cwd)]
            result = subprocess.run(
                [*argv, "resume", TUI_THREAD, prompt],
                env={**os.environ, "CODEX_HOME": str(home)},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                timeout=180,
            )
            assert result.returncode == 0, result.stderr.decode()[-3000:]
            runs.append(result.stdout)
        assert model.remaining == 0 and not model.errors
    first_lines = [run.split(b'{"type":"turn.started"}\n', 1)[1].split(b"\n", 1)[0] for run in runs]
    assert first_lines[0] == first_lines[1]  # what makes the second case below
    yield runs[0], runs[1], sessions / TUI_SESSION.name


@needs_codex
@pytest.mark.xfail(strict=True, reason=EVIDENCE)
def test_an_exec_resume_of_a_tui_thread_is_the_turn_after_the_tuis(
    tui_resumes: tuple[bytes, bytes, Path], tmp_path: Path
) -> None:
    """The TUI's session file is stored (2 turns), then `codex exec resume` is piped in: the run is
    the thread's turn 3. Today it is taken for the thread's first exec run, filed in turn 1."""
    first, _, _ = tui_resumes
    db = tmp_path / "store.db"
    _replay(db, TUI_SESSION)
    _ingest(db, first)
    assert [(n, "listed" in messages) for n, messages in _turns(db)] == [(1, False), (2, False), (3, True)]


@needs_codex
@pytest.mark.xfail(strict=True, reason="a run is named by its first line after turn.started; " + EVIDENCE)
def test_two_runs_with_the_same_first_line_are_two_turns(
    tui_resumes: tuple[bytes, bytes, Path], tmp_path: Path
) -> None:
    """Two resumed runs that begin with the same command, each piped into its own daemon, then the
    session file both appended to: 4 turns, one `listed` in each run's. Today the second run is
    taken for a replay of the first (one turn), and both are filed in the TUI's turn 1."""
    first, second, session = tui_resumes
    db = tmp_path / "store.db"
    _ingest(db, first)
    _ingest(db, second)
    _replay(db, session)
    assert [(n, messages.count("listed")) for n, messages in _turns(db)] == [(1, 0), (2, 0), (3, 1), (4, 1)]


@pytest.mark.xfail(strict=True, reason=EVIDENCE)
def test_a_run_stored_before_the_run_that_preceded_it_keeps_its_place(tmp_path: Path) -> None:
    """`codex exec resume`'s run reaches the store first (its daemon ran; the first run is replayed
    later): it is still the thread's turn 2. Today it takes turn 1."""
    first, second = exec_run_streams(FIXTURES / "codex-0.169.0/exec/resumed_run.jsonl")
    db = tmp_path / "store.db"
    _ingest(db, second)
    _ingest(db, first)
    assert _turns(db) == [
        (1, ["The first run printed its marker."]),
        (2, ["The resumed run printed its marker."]),
    ]
