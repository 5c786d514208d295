"""`ingestor show turn` / `show command` on real recordings of every tool kind: file changes show
their changes and diffs, MCP calls their arguments and result, web searches their query, plans their
steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from ingestor.cli.commands import main
from ingestor.sinks.sqlite.apply import apply_ops
from ingestor.sinks.sqlite.sink import connect
from tests.golden.store import FIXTURES, normalize_fixture

TOOLS_STREAM = FIXTURES / "codex-0.169.0/app-server/tools.jsonl"
OLD_SESSION = next((FIXTURES / "codex-0.63.0/sessions/exec-tools").glob("rollout-*.jsonl"))


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield
    structlog.reset_defaults()


def _store(tmp_path: Path, fixture: Path) -> tuple[str, list[str]]:
    conn = connect(tmp_path / "store.db")
    apply_ops(conn, normalize_fixture(fixture))
    turns = [row[0] for row in conn.execute("SELECT turnId FROM turns ORDER BY startedAt")]
    conn.close()
    return f"sqlite:{tmp_path / 'store.db'}", turns


def _show(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["show", *args]) == 0
    return capsys.readouterr().out


def test_show_turn_names_each_tool_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, turns = _store(tmp_path, TOOLS_STREAM)
    files, mcp, search = (_show(capsys, "turn", turn, "--sink", store) for turn in turns)
    assert "  [file] add " in files and "/notes.txt, add " in files
    assert "/notes.txt -> " in files and "/renamed.txt, delete " in files
    assert '  [mcp] fixture/lookup {"key": "alpha", "größe": 7}' in mcp
    assert "    | value of alpha: 42 ✓" in mcp
    assert "    | fail_tool failed on purpose" in mcp
    assert "    |     Mcp error: -32000: broken tool: internal failure" in mcp
    assert "  [search] codex ingestor exactly once" in search
    plan = ["tool: Two steps: look around, then search.", "[x] Inspect the workspace", "[>] Search the web"]
    assert "\n      ".join(plan) in search


def test_show_command_gives_a_file_change_its_diff_and_an_mcp_call_its_arguments_and_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = _store(tmp_path, TOOLS_STREAM)
    edit = _show(capsys, "command", "call_tools_002_0", "--sink", store)
    assert "\n  -second line\n  +second line, edited\n" in edit
    assert "/old.txt:\n  stale\n" in edit
    lookup = _show(capsys, "command", "call_tools_006_0", "--sink", store)
    assert 'arguments:\n  {\n    "key": "alpha",\n    "größe": 7\n  }\n' in lookup
    assert '"structuredContent": {' in lookup and "stdout:\n  value of alpha: 42 ✓" in lookup
    broken = _show(capsys, "command", "call_tools_008_0", "--sink", store)
    assert "error:\n  tool call error: tool call failed for `fixture/broken`" in broken


def test_show_command_of_a_patch_from_an_old_session_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Codex 0.63 recorded a patch only as the apply_patch text: its changes are read from it."""
    store, _ = _store(tmp_path, OLD_SESSION)
    added = _show(capsys, "command", "call_tools_001_1", "--sink", store)
    assert "/notes.txt:\n  first line\n  second line\n" in added
    assert "output (stdout and stderr merged):\n  Success. Updated the following files:" in added
    failed = _show(capsys, "command", "call_tools_003_0", "--sink", store)
    assert "update " in failed and "/missing.txt:\n  @@\n  -absent\n  +present\n" in failed
    assert "apply_patch verification failed" in failed
