"""`ingestor wrap -- COMMAND...` as a user runs it: output through unchanged, exit status and signals
through, stdin through (app-server), the same bytes stored as a replay stores them, and a command
that never waits for a store that is held."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Final

from tests.cli.test_follow import INGESTOR, as_sets, replay_store, store
from tests.golden.store import FIXTURES

RECORDING: Final = FIXTURES / "codex-0.169.0" / "exec" / "multi_turn.jsonl"
APP_SERVER: Final = FIXTURES / "codex-0.169.0" / "app-server" / "multi_turn.jsonl"


def fake_codex(tmp_path: Path, body: str) -> list[str]:
    """A stand-in for a Codex command: a Python script."""
    script = tmp_path / "codex.py"
    script.write_text(body)
    return [sys.executable, str(script)]


def untimed(db: Path) -> dict[str, list[bytes]]:
    """The store without its times: `codex exec --json` lines carry none, and a stream's last activity
    is when its last line arrived, which differ between a live capture and a replay."""
    rows = store(db)
    return as_sets(
        {t: [{k: v for k, v in r.items() if not k.endswith("At")} for r in rs] for t, rs in rows.items()}
    )


def wrap(tmp_path: Path, command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    state = tmp_path / "state"
    return subprocess.Popen(
        [*INGESTOR, "wrap", "--sink", f"sqlite:{tmp_path / 'wrap.db'}", "--state-dir", str(state),
         "--log-level", "warning", "--", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


def test_output_and_exit_status_pass_through_and_the_output_is_stored(tmp_path: Path) -> None:
    command = fake_codex(
        tmp_path,
        "import sys, time\n"
        f"for line in open({str(RECORDING)!r}, 'rb'):\n"
        "    sys.stdout.buffer.write(line); sys.stdout.flush(); time.sleep(0.01)\n"
        "sys.exit(3)\n",
    )
    wrapper = wrap(tmp_path, command)
    out, err = wrapper.communicate(timeout=60)
    assert wrapper.returncode == 3, err.decode()
    assert out == RECORDING.read_bytes()
    replay_store(RECORDING, tmp_path / "replay.db")
    assert untimed(tmp_path / "wrap.db") == untimed(tmp_path / "replay.db")
    assert not list((tmp_path / "state" / "wrap").iterdir()), "the spill file goes once all is stored"


def test_stdin_passes_through_to_the_command(tmp_path: Path) -> None:
    """`codex app-server` reads its requests on stdin: the client's bytes reach it untouched."""
    command = fake_codex(
        tmp_path,
        "import sys\n"
        "requests = sys.stdin.buffer.read()\n"
        f"sys.stdout.buffer.write(open({str(APP_SERVER)!r}, 'rb').read())\n"
        "sys.stderr.buffer.write(requests)\n",
    )
    wrapper = wrap(tmp_path, command, stdin=subprocess.PIPE)
    out, err = wrapper.communicate(b'{"id": 1, "method": "initialize"}\n', timeout=60)
    assert wrapper.returncode == 0, err.decode()
    assert err.endswith(b'{"id": 1, "method": "initialize"}\n')
    assert out == APP_SERVER.read_bytes()
    replay_store(APP_SERVER, tmp_path / "replay.db")
    assert untimed(tmp_path / "wrap.db") == untimed(tmp_path / "replay.db")


def test_a_signal_reaches_the_command_and_the_wrapper_ends_as_it_did(tmp_path: Path) -> None:
    command = fake_codex(
        tmp_path,
        "import sys, time\n"
        f"sys.stdout.buffer.write(open({str(RECORDING)!r}, 'rb').read()); sys.stdout.flush()\n"
        "time.sleep(60)\n",
    )
    wrapper = wrap(tmp_path, command)
    assert wrapper.stdout is not None
    wrapper.stdout.read(100)  # the command is running and writing
    time.sleep(0.5)
    wrapper.send_signal(signal.SIGTERM)
    _, err = wrapper.communicate(timeout=30)
    assert wrapper.returncode == -signal.SIGTERM, err.decode()
    replay_store(RECORDING, tmp_path / "replay.db")
    assert untimed(tmp_path / "wrap.db") == untimed(tmp_path / "replay.db")


def test_the_command_never_waits_for_a_held_store(tmp_path: Path) -> None:
    """Once the command runs, another process holds the store for 4 s: the command still writes all
    its output and ends at once; the wrapper stores it all afterwards and says that it fell behind."""
    db, started, go, ended = tmp_path / "wrap.db", tmp_path / "started", tmp_path / "go", tmp_path / "ended"
    command = fake_codex(
        tmp_path,
        "import os, sys, time\n"
        f"open({str(started)!r}, 'w').close()\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "began = time.monotonic()\n"
        f"data = open({str(APP_SERVER)!r}, 'rb').read()\n"
        "for i in range(0, len(data), 4096):\n"
        "    sys.stdout.buffer.write(data[i:i + 4096]); sys.stdout.flush()\n"
        f"open({str(ended)!r}, 'w').write(str(time.monotonic() - began))\n",
    )
    wrapper = wrap(tmp_path, command)
    while not started.exists():  # the store is open (the command starts after it)
        assert wrapper.poll() is None, wrapper.communicate()
        time.sleep(0.01)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # a backup, a migration
    release = threading.Timer(4.0, holder.execute, args=("COMMIT",))
    release.start()
    began = time.monotonic()
    go.touch()
    out, err = wrapper.communicate(timeout=60)
    release.join()
    assert wrapper.returncode == 0, err.decode()
    assert out == APP_SERVER.read_bytes()
    assert float(ended.read_text()) < 1.0, "the command waited"
    assert time.monotonic() - began > 3.5
    assert b"ingestion fell behind" in err
    replay_store(APP_SERVER, tmp_path / "replay.db")
    assert untimed(db) == untimed(tmp_path / "replay.db")
