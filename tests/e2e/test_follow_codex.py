"""The real Codex CLI (0.169, offline against the scripted model server), as a user runs it: the
daemon follows its CODEX_HOME while `ingestor wrap -- codex exec --json ...` runs it. The wrapper's
output is Codex's own, its status Codex's; the followed session file is stored as a replay of the
finished file stores it, and the wrapped stream as a replay of that stream."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_follow import INGESTOR, as_sets, daemon, finished, replay_store, store, wait_for
from tests.cli.test_wrap import untimed
from tests.helpers.convex_e2e import CODEX_JS, needs_codex

pytestmark = pytest.mark.e2e


@needs_codex
def test_codex_exec_wrapped_and_its_session_file_followed(tmp_path: Path) -> None:
    from testing.codex.model_server import Message, ModelServer, Reasoning, Shell, Step, codex_config_toml

    home, cwd, state = tmp_path / "codex-home", tmp_path / "cwd", tmp_path / "state"
    sessions = home / "sessions"
    sessions.mkdir(parents=True)
    cwd.mkdir()
    script = [
        Step([Reasoning("Plan the count"), Shell("printf '1\\n2\\n3\\n'; exit 3")]),
        Step([Message("Counted, and the command failed with 3.")]),
    ]
    follower = daemon(sessions, tmp_path / "followed.db", state)
    try:
        with ModelServer(script, name="e2e-follow") as model:
            (home / "config.toml").write_text(codex_config_toml(model.base_url))
            env = {**os.environ, "CODEX_HOME": str(home), "HOME": str(home)}
            wrapped = subprocess.run(
                [*INGESTOR, "wrap", "--sink", f"sqlite:{tmp_path / 'wrapped.db'}", "--state-dir",
                 str(tmp_path / "wrap-state"), "--log-level", "warning", "--",
                 "node", str(CODEX_JS), "exec", "--json", "--skip-git-repo-check", "-C", str(cwd), "count"],
                env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False,
            )  # fmt: skip
            assert model.remaining == 0 and not model.errors
        assert wrapped.returncode == 0, wrapped.stderr.decode(errors="replace")[-3000:]
        assert b'"type":"turn.completed"' in wrapped.stdout
        [session] = sessions.glob("*/*/*/rollout-*.jsonl")
        wait_for(lambda: finished(state, session))
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=30)
        assert follower.returncode == 0, err.decode()
    finally:
        if follower.poll() is None:
            follower.kill()
    assert as_sets(store(tmp_path / "followed.db")) == replay_store(session, tmp_path / "replay-session.db")
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(wrapped.stdout)
    replay_store(stream, tmp_path / "replay-stream.db")
    assert untimed(tmp_path / "wrapped.db") == untimed(tmp_path / "replay-stream.db")
    [command] = store(tmp_path / "wrapped.db")["commands"]
    assert command["exitCode"] == 3 and command["aggregatedOutput"] == "1\n2\n3\n"
