"""`ingestor usage` over the store of a large sessions archive, and `replay` + `usage` beside ccusage
reading the same files.

    .venv/bin/python -m bench.usage                       # a generated archive (--threads copies)
    .venv/bin/python -m bench.usage --sessions DIR        # an archive of your own (e.g. bench's
                                                          # sessions-archive workload, once merged)

The generated archive is every real session file of fixtures/ again and again, each copy with new
thread and call ids (so every copy is its own thread, as in a real archive). Times are wall-clock
medians (min-max) of `--runs` runs, each command pinned to core 0 when taskset exists; the daemon is
`.venv-compiled` when it exists (what users install), else `.venv`. Not part of `bench/run.sh`'s
targets: a comparison, printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[1]
FIXTURES: Final = REPO / "fixtures"
CCUSAGE: Final = REPO / "node_modules/@ccusage/codex/dist/index.js"


def generate(directory: Path, threads: int) -> int:
    """`threads` session files under directory/sessions/YYYY/MM/DD; returns their total bytes."""
    sources = sorted(FIXTURES.glob("codex-*/sessions/*/rollout-*.jsonl"))
    total = 0
    for n in range(threads):
        source = sources[n % len(sources)]
        old_id = source.stem[-36:]
        new_id = str(uuid.UUID(int=n + 1, version=4))
        text = source.read_text().replace(old_id, new_id).replace('"call_', f'"call_{n}_')
        day = f"2026/11/{1 + n % 28:02d}"
        target = directory / "sessions" / day / source.name.replace(old_id, new_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        total += len(text.encode())
    return total


def _daemon() -> str:
    compiled = REPO / ".venv-compiled/bin/ingestor"
    return str(compiled if compiled.exists() else REPO / ".venv/bin/ingestor")


def _pinned(argv: list[str]) -> list[str]:
    return ["taskset", "-c", "0", *argv] if shutil.which("taskset") else argv


def timed(argv: list[str], env: dict[str, str], runs: int, before: list[str] | None = None) -> list[float]:
    seconds = []
    for _ in range(runs):
        if before:
            subprocess.run(before, check=True, capture_output=True)
        began = time.perf_counter()
        subprocess.run(_pinned(argv), check=True, capture_output=True, env=env)
        seconds.append(time.perf_counter() - began)
    return seconds


def fmt(seconds: list[float]) -> str:
    return f"{statistics.median(seconds):.2f} s ({min(seconds):.2f}-{max(seconds):.2f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.usage", description=__doc__)
    ap.add_argument("--sessions", type=Path, help="an existing CODEX_HOME-like directory holding sessions/")
    ap.add_argument(
        "--threads", type=int, default=2000, help="generated session files (default: %(default)s)"
    )
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-usage-") as tmp:
        work = Path(tmp)
        home = args.sessions or work
        if args.sessions is None:
            size = generate(work, args.threads)
            print(f"archive: {args.threads} generated session files, {size / 1e6:.1f} MB")
        store = work / "store.db"
        env = {**os.environ, "TZ": "UTC", "CODEX_HOME": str(home)}
        env = {k: v for k, v in env.items() if not k.startswith("CONVEX_")}
        ingestor = _daemon()
        replay = [ingestor, "replay", str(home / "sessions"), f"--sink=sqlite:{store}", "--log-level=warning"]
        remove = ["rm", "-f", str(store), f"{store}-wal", f"{store}-shm"]
        replays = timed(replay, env, args.runs, before=remove)
        usage = timed([ingestor, "usage", "--by", "day", "--json", f"--sink=sqlite:{store}"], env, args.runs)
        print(f"daemon: {ingestor}")
        print(f"ingestor replay (into a new store)    {fmt(replays)}")
        print(f"ingestor usage --by day (the store)   {fmt(usage)}")
        both = statistics.median(replays) + statistics.median(usage)
        print(f"replay + usage                        {both:.2f} s")
        if shutil.which("node") and CCUSAGE.exists():
            ccusage = timed(["node", str(CCUSAGE), "daily", "--offline", "--json"], env, args.runs)
            print(f"ccusage-codex daily (the files)       {fmt(ccusage)}")
        else:
            print("ccusage: not installed (scripts/bootstrap --node)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
