"""Delivery to a Convex HTTP endpoint: the blackhole ceiling, and batching vs one mutation per op."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import commands
from bench.hole import Blackhole, blackhole
from bench.procs import PYTHON, RESULTS_TMP, bench_env, pinned, run, warm_cache
from bench.results import Measurement, show_cmd

MIB = 1024 * 1024
ADMIN_KEY = "bench-admin-key-0123456789"  # 16+ characters: shorter keys are refused


def convex_env(url: str) -> dict[str, str]:
    return bench_env({"CONVEX_URL": url, "CONVEX_ADMIN_KEY": ADMIN_KEY})


def ops_file(path: Path) -> tuple[Path, int]:
    """The ops the daemon makes of `path` (`--sink jsonl:-`), and how many there are."""
    RESULTS_TMP.mkdir(parents=True, exist_ok=True)
    out = RESULTS_TMP / (path.stem + ".ops.jsonl")
    with out.open("wb") as f:
        run(commands.replay(path, "jsonl:-"), stdin=None, capture_stdout=False, stdout_file=f)
    with out.open("rb") as f:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return out, count


def _deliver_once(bh: Blackhole, path: Path, expected_ops: int, m: Measurement, meta: dict[str, Any]) -> None:
    work = Path(tempfile.mkdtemp(dir=RESULTS_TMP, prefix="convex-"))
    try:
        bh.reset()
        cmd = pinned(commands.replay_convex(path, work / "state"))
        m.command = show_cmd([c.replace(str(work), "$TMP") for c in cmd])
        start_ns = time.monotonic_ns()
        r = run(cmd, env=convex_env(bh.url), capture_stdout=False, timeout=900)
        stats = bh.wait_ops(expected_ops, timeout=30)
        end_ns = max(start_ns + int(r.wall_s * 1e9), stats["last_ns"])
        seconds = (end_ns - start_ns) / 1e9
        m.add(
            eps=meta["events"] / seconds,
            mibs=meta["bytes"] / MIB / seconds,
            wall_s=seconds,
            ops_per_s=stats["ops"] / seconds,
            requests=stats["requests"],
            ops=stats["ops"],
            confirmed_share=stats["ops"] / expected_ops if expected_ops else 0.0,
            rss_mib=r.maxrss_kib / 1024,
            request_mib=stats["bytes"] / MIB,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def convex_blackhole(
    path: Path, meta: dict[str, Any], expected_ops: int, runs: int, delay_ms: float = 0.0
) -> Measurement:
    mid = "replay-convex" if not delay_ms else f"replay-convex-delay{delay_ms:g}ms"
    m = Measurement(mid, meta["name"], "")
    m.info.update(expected_ops=expected_ops, delay_ms=delay_ms)
    warm_cache(path)
    with blackhole(delay_ms=delay_ms) as bh:
        m.info["blackhole_command"] = show_cmd(bh.cmd)
        for _ in range(runs):
            _deliver_once(bh, path, expected_ops, m, meta)
    return m


def naive(
    ops_path: Path, workload: str, events_per_op: float, runs: int, limit: int, delay_ms: float
) -> Measurement:
    m = Measurement(f"naive-delay{delay_ms:g}ms", workload, "")
    m.info.update(limit=limit, events_per_op=events_per_op, delay_ms=delay_ms)
    with blackhole(delay_ms=delay_ms) as bh:
        cmd = pinned(
            [
                PYTHON,
                "-m",
                "bench.naive",
                "--url",
                bh.url,
                "--ops",
                str(ops_path),
                "--limit",
                str(limit),
                "--events-per-op",
                f"{events_per_op:.6f}",
            ]
        )
        m.command = show_cmd(cmd).replace(bh.url, "$BLACKHOLE_URL")
        for _ in range(runs):
            r = orjson.loads(run(cmd).stdout)
            m.add(
                eps=r["events"] / r["seconds"],
                ops_per_s=r["ops"] / r["seconds"],
                ms_per_op=r["seconds"] / r["ops"] * 1000,
            )
    return m
