"""Throughput on one core: the orjson ceiling, `replay --sink null`, and `replay --sink sqlite:`."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench import commands
from bench.procs import PYTHON, RESULTS_TMP, pinned, run, warm_cache
from bench.results import Measurement, show_cmd

MIB = 1024 * 1024


def ceiling_vs_null(path: Path, meta: dict[str, Any], runs: int) -> Measurement:
    """Alternate the ceiling and the daemon run by run, so that both see the same machine state."""
    events, size = meta["events"], meta["bytes"]
    ceiling_cmd = pinned([PYTHON, "-m", "bench.ceiling", str(path)])
    null_cmd = pinned(commands.replay(path, "null"))
    m = Measurement("replay-null", meta["name"], show_cmd(null_cmd))
    m.info["ceiling_command"] = show_cmd(ceiling_cmd)
    startup_cmd = pinned(commands.replay(_empty_file(), "null"))
    m.info["startup_command"] = show_cmd(startup_cmd)
    warm_cache(path)
    for _ in range(runs):
        c = run(ceiling_cmd)
        loop_s = orjson.loads(c.stdout)["loop_s"]
        r = run(null_cmd, capture_stdout=False)
        # Start-up (an empty file) right after, so that the net figure sees the same machine state.
        s = run(startup_cmd, capture_stdout=False)
        net_s = max(r.wall_s - s.wall_s, 1e-9)
        m.add(
            startup_s=s.wall_s,
            net_eps=events / net_s,
            net_us_per_event=net_s / events * 1e6,
            ceiling_eps=events / c.wall_s,
            ceiling_mibs=size / MIB / c.wall_s,
            ceiling_loop_eps=events / loop_s,
            eps=events / r.wall_s,
            mibs=size / MIB / r.wall_s,
            wall_s=r.wall_s,
            us_per_event=r.wall_s / events * 1e6,
            ratio=(events / r.wall_s) / (events / c.wall_s),
            rss_mib=r.maxrss_kib / 1024,
        )
    return m


def _empty_file() -> Path:
    RESULTS_TMP.mkdir(parents=True, exist_ok=True)
    empty = RESULTS_TMP / "empty.jsonl"
    empty.write_bytes(b"")
    return empty


def startup(runs: int) -> Measurement:
    """`replay` of an empty file: the fixed cost included in every wall time above."""
    cmd = pinned(commands.replay(_empty_file(), "null"))
    m = Measurement("startup", "empty", show_cmd(cmd))
    for _ in range(runs):
        r = run(cmd, capture_stdout=False)
        m.add(wall_s=r.wall_s, rss_mib=r.maxrss_kib / 1024)
    return m


def sqlite(path: Path, meta: dict[str, Any], runs: int) -> Measurement:
    events, size = meta["events"], meta["bytes"]
    RESULTS_TMP.mkdir(parents=True, exist_ok=True)
    m = Measurement("replay-sqlite", meta["name"], "")
    warm_cache(path)
    for _ in range(runs):
        work = Path(tempfile.mkdtemp(dir=RESULTS_TMP, prefix="sqlite-"))
        try:
            db = work / "store.db"
            cmd = pinned(commands.replay(path, f"sqlite:{db}"))
            m.command = show_cmd([c.replace(str(work), "$TMP") for c in cmd])
            r = run(cmd, capture_stdout=False)
            m.add(
                eps=events / r.wall_s,
                mibs=size / MIB / r.wall_s,
                wall_s=r.wall_s,
                rss_mib=r.maxrss_kib / 1024,
                db_mib=_tree_size(work) / MIB,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return m


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
