"""Record the first-contact fixtures under ``fixtures/first-contact/``: real Codex output that is
*not* a Codex JSON stream, for the tests of how the ingestor reports such input.

* ``codex-<version>/exec-text.txt``: what ``codex exec "<prompt>" 2>&1 | ingestor run`` receives
  (``codex exec`` without ``--json``: the final message on stdout, the transcript on stderr, one
  pipe for both, as the shell's ``2>&1`` makes it), for the first turn of ``multi_turn``;
* ``codex-0.169.0/codex-home/``: the ``CODEX_HOME`` (``~/.codex``) that run left behind: its
  session file, ``config.toml``, and the SQLite databases Codex keeps beside ``sessions/``. Hidden
  entries (Codex's bundled skills under ``skills/.system``, lock files) are left out: they are not
  ours to commit, and replay skips hidden entries anyway.

    .venv/bin/python testing/codex/record_first_contact.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from testing.codex.record import FIXTURES, SCENARIOS, TURN_TIMEOUT_S, VERSIONS, prepared_run, script

OUT = FIXTURES / "first-contact"
HOME_VERSION = "0.169.0"


def record(version: str) -> None:
    scenario = next(s for s in SCENARIOS if s.name == "multi_turn")
    with prepared_run(version, "exec", scenario, keep=False) as run:
        run.server.push(*script(scenario)[0])
        done = subprocess.run(
            run.argv("exec", "--skip-git-repo-check", "-C", str(run.cwd), scenario.turns[0].prompt),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=run.env(),
            cwd=run.cwd,
            timeout=TURN_TIMEOUT_S,
            check=True,
        )
        out = OUT / f"codex-{version}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "exec-text.txt").write_bytes(done.stdout)
        if version == HOME_VERSION:
            shutil.rmtree(out / "codex-home", ignore_errors=True)
            shutil.copytree(run.home, out / "codex-home", ignore=shutil.ignore_patterns(".*"))


def main() -> int:
    for version in VERSIONS:
        record(version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
