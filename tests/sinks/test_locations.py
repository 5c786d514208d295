"""Default locations (ingestor.sinks.locations): per user, from any directory; an earlier version's store
or spool in the current directory is used and pointed at, never silently left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import structlog.testing

from ingestor.sinks.locations import default_state_dir, default_store

REPO = Path(__file__).resolve().parents[2]
SESSION = next((REPO / "fixtures/codex-0.169.0/sessions/exec-multi_turn").glob("rollout-*.jsonl"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user whose XDG directories are under tmp_path, working in tmp_path/work."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def test_defaults_are_per_user(home: Path) -> None:
    assert default_store().path == home / "data/codex-ingestor/ingestor.db"
    assert default_state_dir().path == home / "state/codex-ingestor"
    assert not default_store().legacy and not default_state_dir().legacy


def test_a_store_in_the_current_directory_is_still_used(home: Path) -> None:
    Path("ingestor.db").touch()
    store = default_store()
    assert (store.path, store.legacy) == (Path("ingestor.db"), True)
    Path("ingestor.db").unlink()
    Path("ingestor.db").mkdir()  # not a store
    assert not default_store().legacy


def test_an_old_spool_is_used_only_where_earlier_versions_looked(home: Path) -> None:
    Path(".ingestor-state").mkdir()
    # With XDG_STATE_HOME set, earlier versions used it too: the directory here was never theirs.
    assert default_state_dir(os.environ).path == home / "state/codex-ingestor"
    state = default_state_dir({})
    assert (state.path, state.legacy) == (Path(".ingestor-state"), True)


def _ingestor(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEX_")}
    env |= {"XDG_DATA_HOME": str(home / "data"), "XDG_STATE_HOME": str(home / "state")}
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _thread_id() -> str:
    return str(orjson.loads(SESSION.read_bytes().splitlines()[0])["payload"]["id"])


def test_show_finds_what_replay_stored_from_any_directory(home: Path) -> None:
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    stored = _ingestor("replay", str(SESSION), cwd=home / "work", home=home)
    assert stored.returncode == 0, stored.stderr
    store = home / "data/codex-ingestor/ingestor.db"
    assert f"ingestor: storing in {store} (" in stored.stderr
    shown = _ingestor("show", "conversation", _thread_id(), cwd=elsewhere, home=home)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.startswith(f"ingestor: reading from {store} (")
    assert _thread_id() in shown.stdout
    assert not (home / "work/ingestor.db").exists() and not (elsewhere / "ingestor.db").exists()
    assert (store.parent.stat().st_mode & 0o777) == 0o700


def test_an_earlier_versions_store_in_the_current_directory_is_used_and_pointed_at(home: Path) -> None:
    old = _ingestor("replay", str(SESSION), "--sink", "sqlite:ingestor.db", cwd=home / "work", home=home)
    assert old.returncode == 0, old.stderr
    shown = _ingestor("show", "conversation", _thread_id(), cwd=home / "work", home=home)
    assert shown.returncode == 0, shown.stderr
    new = home / "data/codex-ingestor/ingestor.db"
    assert shown.stderr.splitlines()[0] == (
        "ingestor: reading from ingestor.db (found in the current directory, where earlier versions "
        f"kept it; the default is now {new}: move it there (when no ingestor is using it) to use it "
        "from any directory)"
    )
    assert _thread_id() in shown.stdout
    assert not new.exists()


def test_show_without_a_store_says_how_to_make_one(home: Path) -> None:
    shown = _ingestor("show", "conversation", "x", cwd=home / "work", home=home)
    assert shown.returncode == 1
    assert "no SQLite store at" in shown.stderr and "ingestor replay ~/.codex/sessions" in shown.stderr
    assert "Traceback" not in shown.stderr
    assert not (home / "data").exists()  # reading creates nothing


def test_the_convex_sink_uses_an_old_spool_and_says_so(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ingestor.sinks.convex.config import sink_config
    from ingestor.sinks.convex.deployment import ConvexOptions

    assert sink_config({}, ConvexOptions()).state_dir == home / "state/codex-ingestor"
    Path(".ingestor-state").mkdir()
    monkeypatch.delenv("XDG_STATE_HOME")
    with structlog.testing.capture_logs() as logs:
        assert sink_config({}, ConvexOptions()).state_dir == Path(".ingestor-state")
        assert sink_config({}, ConvexOptions(state_dir=Path("/given"))).state_dir == Path("/given")
    assert [log["log_level"] for log in logs] == ["warning"]
    assert logs[0]["event"].startswith("using the spool in ./.ingestor-state: found in the current directory")
