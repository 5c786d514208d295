"""Where the daemon's time goes: py-spy samples of one run, as top self / inclusive functions."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.procs import PYTHON, RESULTS_TMP, ROOT, bench_env, pinned
from bench.results import show_cmd


def _py_spy() -> str | None:
    local = Path(PYTHON).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def profile(
    cmd: Sequence[str], *, env: Mapping[str, str] | None = None, top: int = 15, rate: int = 250
) -> dict[str, Any]:
    """Run `cmd` (a Python program) under `py-spy record -f raw`; aggregate the folded stacks.

    `self`: where the samples were (any code); `inclusive`: the project's own functions
    (`ingestor/`) by the share of samples they were on the stack for, the event loop left out.
    """
    spy = _py_spy()
    if spy is None:
        return {"error": "py-spy is not installed (pip install -e '.[bench]')"}
    RESULTS_TMP.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS_TMP) as tmp:
        out = Path(tmp) / "profile.txt"
        full = pinned([spy, "record", "-f", "raw", "-r", str(rate), "--nolineno", "-o", str(out), "--", *cmd])
        proc = subprocess.run(full, env=dict(env or bench_env()), cwd=ROOT, capture_output=True, timeout=900)
        if proc.returncode != 0 or not out.exists():
            return {"error": proc.stderr.decode(errors="replace")[-2000:], "command": show_cmd(full)}
        folded = out.read_text()
    result = aggregate(folded, top)
    result["command"] = show_cmd([c.replace(str(out), "profile.txt") for c in full])
    return result


def _short(frame: str) -> str:
    # py-spy frames look like `function (path/to/module.py)`
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for prefix in (str(ROOT) + "/", "/usr/lib/python3.11/", "/usr/local/lib/python3.11/"):
        where = where.replace(prefix, "")
    if "site-packages/" in where:
        where = where.split("site-packages/", 1)[1]
    return f"{name} ({where})" if where else name


def aggregate(folded: str, top: int) -> dict[str, Any]:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [
            _short(f)
            for f in stack.split(";")
            if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        if not frames:
            continue
        total += count
        self_c[frames[-1]] += count
        for f in set(frames):
            if "(ingestor/" in f and not f.startswith(("main (", "<module>")):
                incl[f] += count

    def rows(c: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total * 100) for name, n in c.most_common(top)] if total else []

    return {"samples": total, "self": rows(self_c), "inclusive": rows(incl)}
