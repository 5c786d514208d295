"""`python -m bench`: run the suite, write bench-results/*.json, render docs/benchmarks.md.

python -m bench                 # the full suite: five runs each, 10k..1M events, soak, 1 GB archive (~40 min)
python -m bench --smoke         # everything tiny (10k events, one run): checks the harness only
python -m bench --only throughput,sqlite --runs 3
python -m bench --only archive --archives 2000 --runs 3
python -m bench --render-only   # re-render docs/benchmarks.md from bench-results/latest.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from bench import archive, delivery, follow, live, machine, report, soak, throughput
from bench.plan import FULL, SECTIONS, SMOKE, Plan
from bench.procs import RESULTS, pin_self, pinned
from bench.profiling import profile
from bench.results import Measurement
from bench.templates import Templates
from bench.workloads import Workload, describe, ensure


class Suite:
    def __init__(self, plan: Plan, only: set[str]) -> None:
        self.plan = plan
        self.only = only
        self.templates = Templates.load()
        self.measurements: list[Measurement] = []
        self.workloads: dict[str, dict[str, Any]] = {}
        self.paths: dict[str, Path] = {}
        self.ops: dict[str, tuple[Path, int]] = {}
        self.profiles: dict[str, Any] = {}

    def log(self, msg: str) -> None:
        print(f"[bench {dt.datetime.now(dt.UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)

    def workload(self, w: Workload) -> tuple[Path, dict[str, Any]]:
        if w.name not in self.paths:
            started = time.perf_counter()
            self.paths[w.name] = ensure(w, self.templates)
            self.workloads[w.name] = describe(self.paths[w.name], w)
            self.log(
                f"workload {w.name}: {self.workloads[w.name]['bytes'] / 2**20:.1f} MiB "
                f"({time.perf_counter() - started:.1f} s)"
            )
        return self.paths[w.name], self.workloads[w.name]

    def expected_ops(self, w: Workload) -> tuple[Path, int]:
        if w.name not in self.ops:
            path, _ = self.workload(w)
            self.ops[w.name] = delivery.ops_file(path)
            self.workloads[w.name]["ops"] = self.ops[w.name][1]
        return self.ops[w.name]

    def attempt(self, mid: str, workload: str, fn: Callable[[], Measurement | None]) -> None:
        self.log(f"{mid} {workload} ...")
        started = time.perf_counter()
        try:
            m = fn()
        except Exception as exc:  # a component may be missing: record it and go on
            tb = traceback.format_exc(limit=3)
            self.log(f"{mid} {workload} FAILED: {exc}")
            self.measurements.append(Measurement(mid, workload, "", error=f"{exc}\n{tb}"[-4000:]))
            return
        if m is not None:
            self.measurements.append(m)
            keys = ("eps", "p99_ms", "peak_rss_mib", "ratio")
            shown = {k: round(v, 2) for k in keys if (v := m.median(k)) is not None}
            self.log(f"{mid} {workload}: {shown} ({time.perf_counter() - started:.1f} s)")

    # -- sections ----------------------------------------------------------------------------------

    def run(self) -> None:
        p = self.plan
        if "throughput" in self.only:
            self.attempt("startup", "empty", lambda: throughput.startup(p.runs))
            for w in p.throughput:
                path, meta = self.workload(w)
                self.attempt(
                    "replay-null",
                    w.name,
                    lambda path=path, meta=meta: (  # type: ignore[misc]
                        throughput.ceiling_vs_null(path, meta, p.runs)
                    ),
                )
        if "sqlite" in self.only:
            path, meta = self.workload(p.sqlite)
            self.attempt("replay-sqlite", p.sqlite.name, lambda: throughput.sqlite(path, meta, p.runs))
        if "convex" in self.only:
            self.attempt("replay-convex", p.convex.name, lambda: self._convex(p.convex, 0.0))
        if "batching" in self.only:
            self.attempt(
                f"replay-convex-delay{p.delay_ms:g}ms",
                p.batching.name,
                lambda: self._convex(p.batching, p.delay_ms),
            )
            self.attempt(f"naive-delay{p.delay_ms:g}ms", p.batching.name, self._naive)
        if "latency" in self.only:
            self.attempt(
                "latency",
                f"live-{p.latency_rate:g}eps",
                lambda: live.latency(p.runs, p.latency_rate, p.latency_count, flush_ms=50.0),
            )
        if "memory" in self.only:
            self.attempt("memory-spool", p.memory.name, self._memory)
        if "soak" in self.only:
            for variant, threads, step in p.soak:
                self.attempt(
                    "soak",
                    f"{variant}-{threads}",
                    lambda variant=variant, threads=threads, step=step: soak.measure(  # type: ignore[misc]
                        variant, threads, step
                    ),
                )
        if "follow" in self.only:
            self.attempt(
                "follow-latency",
                f"follow-{p.follow_files}-files",
                lambda: follow.latency(p.runs, p.follow_files, p.follow_rate, p.follow_count),
            )
            self.attempt(
                "follow-restart",
                f"follow-{p.restart_files}-files",
                lambda: follow.restart_and_idle(min(p.runs, p.restart_runs), p.restart_files, p.idle_s),
            )
            root, meta = self.archive(p.daily_archive)
            self.attempt(
                "replay-state-dir", f"{meta['name']}+1MB", lambda: follow.daily_replay(root, meta, p.runs)
            )
        if "archive" in self.only:
            self._archives()
        if "profile" in self.only:
            self._profiles()

    def archive(self, files: int) -> tuple[Path, dict[str, Any]]:
        """The sessions archive of `files` files (generated once, cached), as a workload of this run."""
        started = time.perf_counter()
        root, meta = archive.ensure(files)
        if meta["name"] not in self.workloads:
            self.workloads[meta["name"]] = meta
            took = time.perf_counter() - started
            self.log(f"workload {meta['name']}: {meta['bytes'] / 2**20:.1f} MiB ({took:.1f} s)")
        return root, meta

    def _archives(self) -> None:
        for number, files in enumerate(self.plan.archives):
            root, meta = self.archive(files)
            self._archive(root, meta, first=number == 0)

    def _archive(self, root: Path, meta: dict[str, Any], *, first: bool) -> None:
        runs = self.plan.runs if first else min(self.plan.runs, self.plan.archive_large_runs)
        self.attempt("archive", meta["name"], lambda: archive.measure(root, meta, runs))
        if first:
            self.attempt("archive-convex", meta["name"], lambda: archive.convex(root, meta, runs))

    def _convex(self, w: Workload, delay_ms: float) -> Measurement:
        path, meta = self.workload(w)
        _, count = self.expected_ops(w)
        return delivery.convex_blackhole(path, meta, count, self.plan.runs, delay_ms)

    def _naive(self) -> Measurement:
        w = self.plan.batching
        _, meta = self.workload(w)
        ops_path, count = self.expected_ops(w)
        return delivery.naive(
            ops_path,
            w.name,
            meta["events"] / count,
            self.plan.runs,
            self.plan.naive_limit,
            self.plan.delay_ms,
        )

    def _memory(self) -> Measurement:
        w = self.plan.memory
        path, meta = self.workload(w)
        _, count = self.expected_ops(w)
        return live.memory(path, meta, count, self.plan.memory_runs)

    def _profiles(self) -> None:
        from bench import commands
        from bench.hole import blackhole

        path, _ = self.workload(self.plan.profile)
        self.log("profiles ...")
        self.profiles["replay-null"] = profile(commands.replay(path, "null"))
        db = RESULTS / "tmp" / "profile.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        self.profiles["replay-sqlite"] = profile(commands.replay(path, f"sqlite:{db}"))
        state = RESULTS / "tmp" / "profile-state"
        with blackhole() as bh:
            self.profiles["replay-convex"] = profile(
                commands.replay_convex(path, state), env=delivery.convex_env(bh.url)
            )
        shutil.rmtree(state, ignore_errors=True)
        for prof in self.profiles.values():
            prof["workload"] = self.plan.profile.name
        if self.plan.profile_large is not None:
            large, _ = self.workload(self.plan.profile_large)
            self.profiles["replay-null-large"] = profile(commands.replay(large, "null"))
            self.profiles["replay-null-large"]["workload"] = self.plan.profile_large.name
        if self.plan.archives:
            root, meta = archive.ensure(self.plan.archives[0])
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            self.profiles["archive-sqlite"] = profile(commands.replay(root / "sessions", f"sqlite:{db}"))
            self.profiles["archive-sqlite"]["workload"] = meta["name"]
        for name, prof in self.profiles.items():
            self.log(f"profile {name}: {prof.get('samples', prof.get('error', '')[:200])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="tiny workloads, one run; targets not asserted")
    ap.add_argument("--runs", type=int, help="runs per measurement (default: 5, smoke: 1)")
    ap.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    ap.add_argument(
        "--archives", help="comma-separated file counts of the sessions archives (default: the plan's)"
    )
    ap.add_argument("--render-only", action="store_true", help="only re-render from latest.json")
    ap.add_argument("--no-render", action="store_true", help="do not write docs/benchmarks.md")
    args = ap.parse_args(argv)

    if args.render_only:
        data = orjson.loads((RESULTS / "latest.json").read_bytes())
        report.render(data, report.DOC, report.CHART)
        return 0

    plan = SMOKE if args.smoke else FULL
    if args.runs:
        plan = replace(plan, runs=args.runs, memory_runs=min(plan.memory_runs, args.runs))
    if args.archives:
        plan = replace(plan, archives=tuple(int(n) for n in args.archives.split(",")))
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    if unknown := only - set(SECTIONS):
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")

    pin_self()
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(RESULTS / "tmp", ignore_errors=True)  # scratch of earlier runs (ops files, stores)
    suite = Suite(plan, only)
    started = dt.datetime.now(dt.UTC)
    load_before = machine.load()
    suite.log(f"{plan.name} plan, {plan.runs} run(s); load: {load_before['uptime']}")
    suite.run()
    data = {
        "meta": {
            "plan": plan.name,
            "runs": plan.runs,
            "sections": sorted(only),
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine.describe(),
            "load_before": load_before,
            "load_after": machine.load(),
            "pinning": {"daemon": " ".join(pinned(["CMD"])), "harness_and_blackhole": "core 1"},
            "templates": suite.templates.summary(),
            "plan_detail": {k: str(v) for k, v in vars(plan).items()},
        },
        "workloads": suite.workloads,
        "measurements": [m.to_json() for m in suite.measurements],
        "profiles": suite.profiles,
    }
    data["targets"] = report.evaluate(data)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"results-{plan.name}-{stamp}.json"
    blob = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    out.write_bytes(blob)
    complete = plan.name == "full" and only == set(SECTIONS) and not args.archives
    kind = "latest" if complete else f"latest-{plan.name}{'' if only == set(SECTIONS) else '-partial'}"
    (RESULTS / f"{kind}.json").write_bytes(blob)
    suite.log(f"results: {out}")
    if not args.no_render:
        # docs/ shows complete full runs only; smoke and partial runs render beside their JSON.
        if complete:
            doc, png = report.DOC, report.CHART
        else:
            (RESULTS / kind).mkdir(exist_ok=True)
            doc, png = RESULTS / kind / "benchmarks.md", RESULTS / kind / "benchmarks.png"
        report.render(data, doc, png)
        suite.log(f"rendered {doc} and {png.name}")
    errors = [m for m in suite.measurements if m.error]
    for t in data["targets"]:
        suite.log(f"target {t['label']}: {t['measured_text']} -> {t['status']}")
    if errors:
        suite.log(f"{len(errors)} measurement(s) failed: {', '.join(m.id for m in errors)}")
        return 1
    return 0
