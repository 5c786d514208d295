"""What a person sees when the command cannot do what they asked: the path or address, what to do,
an exit status, and no traceback (unless --log-level debug). Run as they would run it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECORDING = REPO / "fixtures/codex-0.169.0/exec/multi_turn.jsonl"


def ingestor(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEX_")}
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def only_message(result: subprocess.CompletedProcess[str]) -> str:
    """The one line the command printed on stderr (no log lines, no traceback)."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_store_in_a_missing_directory(tmp_path: Path) -> None:
    result = ingestor("replay", str(RECORDING), "--sink", f"sqlite:{tmp_path}/no/such/dir/x.db")
    assert result.returncode == 2
    assert only_message(result) == (
        f"ingestor: cannot write the SQLite store {tmp_path}/no/such/dir/x.db: the directory "
        f"{tmp_path}/no/such/dir does not exist; choose another with --sink sqlite:PATH"
    )


def test_store_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    result = ingestor("replay", str(RECORDING), "--sink", f"sqlite:{tmp_path}/file/x.db")
    assert result.returncode == 2
    assert only_message(result) == (
        f"ingestor: cannot write the SQLite store {tmp_path}/file/x.db: Not a directory; "
        "choose another with --sink sqlite:PATH"
    )


def test_store_that_is_not_a_database(tmp_path: Path) -> None:
    result = ingestor("replay", str(RECORDING), "--sink", f"sqlite:{RECORDING}")
    assert result.returncode == 2
    assert only_message(result) == (
        f"ingestor: cannot write the SQLite store {RECORDING}: file is not a database (is it an "
        "ingestor store?); choose another with --sink sqlite:PATH"
    )


def as_unprivileged(*args: str) -> list[str]:
    """`ingestor ARGS` as a user that file permissions apply to: root ignores them, so as root the
    command runs as nobody (skipped where that user cannot run the ingestor from this checkout)."""
    argv = [sys.executable, "-m", "ingestor", *args]
    if os.geteuid() != 0:
        return argv
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    probe = subprocess.run([*argv[: -len(args)], "--version"], capture_output=True, cwd="/", check=False)
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot run the ingestor here: {probe.stderr[-200:]!r}")
    return argv


def test_store_in_a_read_only_directory() -> None:
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)  # reachable for nobody
        (Path(top) / "ro").mkdir(mode=0o555)
        store = f"{top}/ro/x.db"
        result = subprocess.run(
            as_unprivileged("replay", str(RECORDING), "--sink", f"sqlite:{store}"),
            capture_output=True,
            text=True,
            cwd="/",
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert only_message(result) == (
        f"ingestor: cannot write the SQLite store {store}: Permission denied; "
        "choose another with --sink sqlite:PATH"
    )


def test_unix_socket_in_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "ingest.sock"
    result = ingestor("run", "--unix", str(path), "--sink", "null")
    assert result.returncode == 2
    assert only_message(result) == (
        f"ingestor: --unix {path}: the directory {path.parent} does not exist: create it, or choose "
        "another path"
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_port_in_use(busy_port: int) -> None:
    result = ingestor("run", "--tcp", f"127.0.0.1:{busy_port}", "--sink", "null")
    assert result.returncode == 2
    assert only_message(result) == (
        f"ingestor: --tcp 127.0.0.1:{busy_port}: the port is in use (another daemon?): stop that "
        "process, or choose another port"
    )


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_show_with_convex_unreachable(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    # --convex-url alone selects the Convex sink: the store it names is the one that is unreachable.
    result = ingestor("show", "conversation", "c1", "--convex-url", url, "--log-level", "warning")
    assert result.returncode == 1
    message = only_message(result)
    assert message.startswith(f"ingestor: cannot reach the Convex deployment at {url} (from --convex-url): ")
    assert message.endswith(
        "check that it is running, or name another with --convex-url (or --sink sqlite:PATH for the "
        "embedded store)"
    )


def test_convex_url_beside_another_sink_is_refused(tmp_path: Path) -> None:
    result = ingestor(
        "replay", str(RECORDING), "--sink", f"sqlite:{tmp_path}/x.db", "--convex-url", "http://x"
    )
    assert result.returncode == 2
    assert only_message(result) == (
        f"ingestor: --convex-url applies to --sink convex only, not to --sink sqlite:{tmp_path}/x.db"
    )
    assert not (tmp_path / "x.db").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = ingestor(
        "replay", str(RECORDING), "--sink", f"sqlite:{tmp_path}/no/x.db", "--log-level", "debug"
    )
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "FileNotFoundError" in result.stderr
    assert result.stderr.rstrip().endswith("choose another with --sink sqlite:PATH")


def test_version() -> None:
    result = ingestor("--version")
    assert result.returncode == 0
    assert result.stdout == f"ingestor {version('codex-ingestor')}\n"
