"""Soak: one connection carrying many threads, and the daemon's memory as it goes.

A sidecar's connection to a Codex worker lives for weeks: the daemon's memory must stay flat in the
threads, turns and commands one connection has carried. The daemon (`--sink null`: the pipeline and
the normalizer, no store) reads generated app-server threads, one after another, from one Unix
socket connection; after every `--step` threads the harness waits until all was read (the
`ingestor_events_read_total` metric) and records the daemon's RSS.

Target (issue 10): the peak RSS stays within 25% of the RSS after the first 2,000 threads.

    python -m bench.soak                                        # 100,000 short threads (one turn each)
    python -m bench.soak --variant long --threads 200 --step 10   # long threads (20 turns of commands,
                                                                  # about 4,300 lines each)

The suite runs both (section `soak`, sizes in bench/plan.py) and reports the curves.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import orjson

from bench.gen import Conversation, Ctx
from bench.procs import RESULTS, bench_env, ingestor_cmd, pinned, proc_status
from bench.profiles import SMALL, Profile
from bench.results import Measurement, show_cmd
from bench.templates import Templates

BASELINE_THREADS: Final = 2000
TARGET_GROWTH: Final = 1.25


@dataclass(frozen=True, slots=True)
class Variant:
    profile: Profile
    turns: int
    """Turns per thread."""


VARIANTS: Final = {
    "short": Variant(
        Profile(
            **{
                **asdict(SMALL),
                "name": "soak-short",
                "description": "short threads: one turn, a few deltas, at most one command",
                "threads": 1,
                "legacy_threads": 0,
                "agent_deltas": (2, 6),
                "reasoning_deltas": (1, 3),
                "commands_per_turn": (0, 1),
            }
        ),
        turns=1,
    ),
    "long": Variant(
        Profile(
            **{
                **asdict(SMALL),
                "name": "soak-long",
                "description": "long threads: 20 turns of 4-8 commands each",
                "threads": 1,
                "legacy_threads": 0,
                "commands_per_turn": (4, 8),
            }
        ),
        turns=20,
    ),
}


def thread_lines(ctx: Ctx, turns: int) -> Iterator[bytes]:
    """One new thread's lines (app-server v2), to the end of its `turns`-th turn."""
    done = 0
    for event in Conversation(ctx, legacy=False).run():
        yield orjson.dumps(event)
        if event.get("method") == "thread/status/changed" and event["params"]["status"]["type"] == "idle":
            done += 1
            if done == turns:
                return


@dataclass(frozen=True, slots=True)
class Point:
    threads: int
    lines: int
    rss_mib: float


def events_read(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("ingestor_events_read_total "):
                return int(float(line.split()[1]))
    return 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def soak(variant: Variant, threads: int, step: int, seed: int = 1) -> tuple[list[Point], float]:
    """The RSS curve (after every `step` threads) and the peak RSS (MiB) of one run."""
    ctx = Ctx(variant.profile, seed, Templates.load())
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        sock = Path(scratch) / "in.sock"
        cmd = ingestor_cmd("run", "--unix", str(sock), "--sink", "null", "--metrics", f"127.0.0.1:{port}")
        daemon = subprocess.Popen(pinned(cmd), env=bench_env(), stderr=subprocess.DEVNULL)
        try:
            producer = socket.socket(socket.AF_UNIX)
            while producer.connect_ex(str(sock)) != 0:
                if daemon.poll() is not None:
                    raise RuntimeError("the daemon exited at start")
                time.sleep(0.05)
            points: list[Point] = []
            sent = 0
            for done in range(step, threads + 1, step):
                batch = [line for _ in range(step) for line in thread_lines(ctx, variant.turns)]
                producer.sendall(b"\n".join(batch) + b"\n")
                sent += len(batch)
                while events_read(port) < sent:
                    if daemon.poll() is not None:
                        raise RuntimeError("the daemon exited")
                    time.sleep(0.05)
                points.append(Point(done, sent, proc_status(daemon.pid)["VmRSS"] / 1024))
                print(f"[soak] {done} threads, {sent} lines: {points[-1].rss_mib:.1f} MiB", file=sys.stderr)
            peak = proc_status(daemon.pid)["VmHWM"] / 1024
            producer.close()
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
    return points, peak


def baseline(points: list[Point]) -> Point:
    """The first point at or after `BASELINE_THREADS` threads (a tenth of the run, if shorter)."""
    threads = min(BASELINE_THREADS, points[-1].threads // 10)
    return next(p for p in points if p.threads >= threads)


def measure(variant: str, threads: int, step: int) -> Measurement:
    """One soak run as the suite records it (bench/cli.py, section `soak`)."""
    points, peak = soak(VARIANTS[variant], threads, step)
    base = baseline(points)
    command = show_cmd(
        ["python", "-m", "bench.soak", "--variant", variant, f"--threads={threads}", f"--step={step}"]
    )
    m = Measurement("soak", f"{variant}-{threads}", command)
    m.add(peak_rss_mib=peak, baseline_rss_mib=base.rss_mib, growth=peak / base.rss_mib)
    m.info.update(baseline_threads=base.threads, points=[asdict(p) for p in points])
    return m


def table(variant: str, points: list[Point], peak: float) -> str:
    base = baseline(points)
    ratio = peak / base.rss_mib
    verdict = "met" if ratio <= TARGET_GROWTH else "NOT met"
    rows = [
        f"Soak `{variant}`: peak RSS {peak:.1f} MiB = {ratio:.2f}x the RSS after {base.threads:,} threads "
        f"({base.rss_mib:.1f} MiB); target ≤ {TARGET_GROWTH:.2f}x: {verdict}.",
        "",
        "| threads | lines | RSS (MiB) |",
        "| ---: | ---: | ---: |",
    ]
    rows += [f"| {p.threads:,} | {p.lines:,} | {p.rss_mib:.1f} |" for p in points]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="short")
    parser.add_argument("--threads", type=int, default=100_000)
    parser.add_argument("--step", type=int, default=2000)
    args = parser.parse_args(argv)
    points, peak = soak(VARIANTS[args.variant], args.threads, args.step)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"soak-{args.variant}.json"
    out.write_bytes(
        orjson.dumps({"variant": args.variant, "peak_mib": peak, "points": [asdict(p) for p in points]})
    )
    print(table(args.variant, points, peak))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
