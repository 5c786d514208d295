"""Replay progress (ingestor.cli.progress): a bar with files, lines, bytes, rate and time left when
stderr is a terminal (a pty here, as a person's shell), one summary line otherwise."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tqdm import tqdm

REPO = Path(__file__).resolve().parents[2]
SESSIONS = REPO / "fixtures" / "codex-0.169.0" / "sessions"
FILES = sorted(p for p in SESSIONS.rglob("*") if p.is_file())
LINES = sum(len(p.read_bytes().splitlines()) for p in FILES)
BYTES = sum(p.stat().st_size for p in FILES)


def replay_argv(db: Path) -> list[str]:
    return [sys.executable, "-m", "ingestor", "replay", str(SESSIONS), "--sink", f"sqlite:{db}"]


def test_a_terminal_sees_a_progress_bar(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, columns
    with subprocess.Popen(replay_argv(tmp_path / "db"), stderr=terminal, stdout=terminal) as proc:
        os.close(terminal)
        seen = bytearray()
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            seen += data
        assert proc.wait(timeout=60) == 0
    os.close(controller)
    screen = seen.decode()
    redraws = screen.split("\r")
    final = next(line for line in reversed(redraws) if line.startswith("replay:"))
    assert final.startswith("replay: 100%"), final
    assert f"{len(FILES)}/{len(FILES)} files, {LINES:,} lines" in final
    size = tqdm.format_sizeof(BYTES, divisor=1024)  # bytes read of all, as tqdm writes sizes
    assert f"| {size}/{size} [" in final, final
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, [\d.]+[kMG]?B/s, ", final), final  # elapsed<left, rate


def test_elsewhere_one_summary_line_and_no_bar(tmp_path: Path) -> None:
    result = subprocess.run(replay_argv(tmp_path / "db"), capture_output=True, text=True, check=True)
    assert "\r" not in result.stderr and "files," not in result.stderr
    done = [json.loads(line) for line in result.stderr.splitlines() if '"replay done"' in line]
    assert len(done) == 1
    assert (done[0]["files"], done[0]["lines"], done[0]["bytes"], done[0]["skipped"]) == (
        len(FILES),
        LINES,
        BYTES,
        0,
    )
    assert done[0]["lines_per_second"] > 0
