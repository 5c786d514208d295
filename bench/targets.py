"""The targets of the issue, checked against a results document (bench-results/*.json)."""

from __future__ import annotations

import math
from typing import Any

from bench.stats import least_squares

RATIO_TARGET = 0.20
SMALL_EPS_TARGET = 100_000
SQLITE_EPS_TARGET = 50_000
CONVEX_EPS_TARGET = 50_000
BATCHING_FACTOR_TARGET = 100
LATENCY_SLACK_MS = 50.0
RSS_TARGET_BYTES = 150_000_000  # 150 MB; compared in bytes, shown in MiB too
SOAK_GROWTH_TARGET = 1.25
FOLLOW_P99_MS_TARGET = 250.0
RESTART_CPU_S_TARGET = 1.0
IDLE_CPU_SHARE_TARGET = 0.01
""""≈ 0" idle CPU, read as at most 1% of a core."""
DAILY_REPLAY_S_TARGET = 1.0
FLAT_PER_DECADE = 0.10
ARCHIVE_VS_NULL_TARGET = 2.0
ARCHIVE_PER_FILE_MS_TARGET = 1.0
ARCHIVE_VS_ONE_TARGET = 1.2
USAGE_VS_CCUSAGE_TARGET = 100
"""Scaling counts as flat when the fitted change of µs/event per decade of N is within 10% of the mean."""


def find(data: dict[str, Any], mid: str, workload: str | None = None) -> list[dict[str, Any]]:
    return [
        m for m in data["measurements"] if m["id"] == mid and (workload is None or m["workload"] == workload)
    ]


def med(m: dict[str, Any], key: str) -> float | None:
    s = m.get("summary", {}).get(key)
    return None if s is None else float(s["median"])


def fmt_range(m: dict[str, Any], key: str, digits: int = 0) -> str:
    s = m.get("summary", {}).get(key)
    if s is None:
        return "n/a"
    f = f"{{:,.{digits}f}}"
    if s["n"] == 1:
        return f.format(s["median"])
    return f"{f.format(s['median'])} ({f.format(s['min'])}-{f.format(s['max'])})"


def _row(
    label: str, target: str, measured: float | None, text: str, ok: bool | None, source: str, note: str = ""
) -> dict[str, Any]:
    status = "pending" if ok is None else ("met" if ok else "missed")
    return {
        "label": label,
        "target": target,
        "measured": measured,
        "measured_text": text,
        "status": status,
        "source": source,
        "note": note,
    }


def _pending(label: str, target: str, ms: list[dict[str, Any]], source: str) -> dict[str, Any]:
    err = next((m["error"] for m in ms if m.get("error")), None)
    note = ("failed: " + err.strip().splitlines()[0][:160]) if err else "not measured"
    return _row(label, target, None, "n/a", None, source, note)


def scaling(data: dict[str, Any]) -> dict[str, Any] | None:
    """µs/event of `replay --sink null` vs log10(N) over the codex workloads (raw and minus start-up)."""
    rows = []
    startup = next((med(m, "wall_s") for m in find(data, "startup") if not m.get("error")), None)
    for m in find(data, "replay-null"):
        w = data["workloads"].get(m["workload"], {})
        wall = med(m, "wall_s")
        if m.get("error") or w.get("profile") != "codex" or wall is None:
            continue
        n = int(w["events"])
        corrected = med(m, "net_us_per_event")  # per run: wall minus an empty-file run right after
        if corrected is None and startup is not None:
            corrected = (wall - startup) / n * 1e6
        rows.append(
            {
                "workload": m["workload"],
                "events": n,
                "us_per_event": wall / n * 1e6,
                "us_per_event_net": corrected,
                "eps": med(m, "eps"),
            }
        )
    rows.sort(key=lambda r: r["events"])
    if len(rows) < 2:
        return {"points": rows} if rows else None
    xs = [math.log10(r["events"]) for r in rows]
    out: dict[str, Any] = {"points": rows, "startup_s": startup}
    for key in ("us_per_event", "us_per_event_net"):
        ys = [r[key] for r in rows]
        if any(y is None for y in ys):
            continue
        fit = least_squares(xs, ys)
        mean = sum(ys) / len(ys)
        out[key] = {**fit, "mean": mean, "per_decade_share": fit["slope"] / mean if mean else 0.0}
        fit_n = least_squares([float(r["events"]) for r in rows], ys)
        out[key]["slope_per_million_events"] = fit_n["slope"] * 1e6
    return out


def evaluate(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for m in find(data, "replay-null"):
        label = f"replay --sink null vs ceiling, {m['workload']}"
        target = f"≥ {RATIO_TARGET:.0%} of the ceiling's events/s"
        r = med(m, "ratio")
        if m.get("error") or r is None:
            rows.append(_pending(label, target, [m], "replay-null"))
            continue
        text = f"{r:.1%} ({fmt_range(m, 'eps')} vs {fmt_range(m, 'ceiling_eps')} events/s)"
        rows.append(_row(label, target, r, text, r >= RATIO_TARGET, "replay-null"))
    small = [
        m
        for m in find(data, "replay-null")
        if data["workloads"].get(m["workload"], {}).get("profile") == "small"
    ]
    label, target = "replay --sink null, small events", f"≥ {SMALL_EPS_TARGET:,} events/s"
    eps = med(small[-1], "eps") if small and not small[-1].get("error") else None
    rows.append(
        _row(
            label,
            target,
            eps,
            fmt_range(small[-1], "eps") + " events/s",
            eps >= SMALL_EPS_TARGET,
            "replay-null",
        )
        if eps is not None
        else _pending(label, target, small, "replay-null")
    )
    for mid, label, goal in (
        ("replay-sqlite", "replay --sink sqlite", SQLITE_EPS_TARGET),
        ("replay-convex", "replay --sink convex → blackhole", CONVEX_EPS_TARGET),
    ):
        ms = find(data, mid)
        target = f"≥ {goal:,} events/s"
        eps = med(ms[-1], "eps") if ms and not ms[-1].get("error") else None
        if eps is None:
            rows.append(_pending(label, target, ms, mid))
            continue
        note = ""
        ok = eps >= goal
        share = med(ms[-1], "confirmed_share")
        if share is not None and share < 1.0:
            ok, note = False, f"only {share:.1%} of the ops reached the blackhole"
        rows.append(
            _row(
                f"{label}, {ms[-1]['workload']}",
                target,
                eps,
                fmt_range(ms[-1], "eps") + " events/s",
                ok,
                mid,
                note,
            )
        )
    rows.append(_batching(data))
    rows.append(_latency(data))
    rows.extend(_memory(data))
    rows.extend(_soak(data))
    rows.extend(_follow(data))
    rows.append(_scaling_row(data))
    rows.extend(_archive(data))
    return rows


def _archive(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Sessions archives (bench/archive.py): the store keeps up with the null sink, a file costs little
    more than its lines, the import beats ccusage's scan, and a second replay stores nothing."""
    rows = []
    for m in find(data, "archive"):
        w = m["workload"]
        checks: list[tuple[str, str, str, float | None, str, bool | None]] = []
        ratio, per_file, vs_one = med(m, "sqlite_vs_null"), med(m, "per_file_ms"), med(m, "archive_vs_one")
        sqlite_s, null_s = fmt_range(m, "sqlite_dir_s", 2), fmt_range(m, "null_dir_s", 2)
        one_s = fmt_range(m, "sqlite_one_s", 2)
        checks.append(
            (
                f"archive {w}: replay DIR --sink sqlite vs --sink null",
                f"≤ {ARCHIVE_VS_NULL_TARGET:g}x the null sink's time",
                "sqlite_vs_null",
                ratio,
                f"{ratio or 0:.2f}x ({sqlite_s} s vs {null_s} s)",
                None if ratio is None else ratio <= ARCHIVE_VS_NULL_TARGET,
            )
        )
        checks.append(
            (
                f"archive {w}: per-file overhead into SQLite (DIR vs the same lines as one file)",
                f"< {ARCHIVE_PER_FILE_MS_TARGET:g} ms per file",
                "per_file_ms",
                per_file,
                f"{fmt_range(m, 'per_file_ms', 2)} ms",
                None if per_file is None else per_file < ARCHIVE_PER_FILE_MS_TARGET,
            )
        )
        checks.append(
            (
                f"archive {w}: DIR vs one file, into SQLite",
                f"≤ {ARCHIVE_VS_ONE_TARGET:g}x",
                "archive_vs_one",
                vs_one,
                f"{vs_one or 0:.2f}x ({sqlite_s} s vs {one_s} s)",
                None if vs_one is None else vs_one <= ARCHIVE_VS_ONE_TARGET,
            )
        )
        vs_cc = med(m, "import_vs_ccusage")
        checks.append(
            (
                f"archive {w}: import into SQLite vs ccusage scanning the files",
                "faster (< 1x ccusage's time)",
                "import_vs_ccusage",
                vs_cc,
                f"{vs_cc or 0:.2f}x ({sqlite_s} s vs {fmt_range(m, 'ccusage_s', 2)} s)",
                None if vs_cc is None else vs_cc < 1.0,
            )
        )
        new_rows = med(m, "second_replay_new_rows")
        checks.append(
            (
                f"archive {w}: a second replay into the same store",
                "adds no row",
                "second_replay_new_rows",
                new_rows,
                f"{new_rows or 0:,.0f} new rows of {med(m, 'rows') or 0:,.0f} "
                f"({fmt_range(m, 'second_replay_s', 2)} s)",
                None if new_rows is None else new_rows == 0,
            )
        )
        factor = med(m, "ccusage_vs_usage")
        checks.append(
            (
                f"archive {w}: `ingestor usage` on the store vs ccusage's scan",
                f"≥ {USAGE_VS_CCUSAGE_TARGET}x faster",
                "ccusage_vs_usage",
                factor,
                f"{factor or 0:,.{0 if (factor or 0) >= 10 else 2}f}x "
                f"({fmt_range(m, 'usage_s', 3)} s vs {fmt_range(m, 'ccusage_s', 2)} s)",
                None if factor is None else factor >= USAGE_VS_CCUSAGE_TARGET,
            )
        )
        for label, target, _key, value, text, ok in checks:
            if m.get("error") or value is None:
                row = _pending(label, target, [m], "archive")
                if not m.get("error") and _key == "ccusage_vs_usage":
                    row["note"] = "this build has no `ingestor usage` (issue 14)"
                rows.append(row)
            else:
                rows.append(_row(label, target, value, text, ok, "archive"))
    rows.extend(_archive_convex(data))
    return rows


def _archive_convex(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    app_server = [m for m in find(data, "replay-convex") if not m.get("error")]
    for m in find(data, "archive-convex"):
        label = f"archive {m['workload']}: replay DIR --sink convex → blackhole, µs per line"
        target = "≤ the app-server workload's (replay --sink convex, codex-100k)"
        mine = med(m, "us_per_line")
        if m.get("error") or mine is None:
            rows.append(_pending(label, target, [m], "archive-convex"))
            continue
        text = f"{fmt_range(m, 'us_per_line', 1)} µs ({fmt_range(m, 'eps')} lines/s)"
        ok: bool | None = None
        if app_server:
            other = app_server[-1]
            theirs = 1e6 / (med(other, "eps") or math.inf)
            text += f" vs {theirs:.1f} µs on {other['workload']}"
            ok = mine <= theirs
        share = med(m, "confirmed_share")
        note = "" if share is None or share >= 1.0 else f"only {share:.1%} of the ops reached the blackhole"
        rows.append(_row(label, target, mine, text, False if note else ok, "archive-convex", note))
    return rows


def _follow(data: dict[str, Any]) -> list[dict[str, Any]]:
    """`run --follow` and `replay --state-dir` (bench/follow.py)."""
    rows = []
    ms = find(data, "follow-latency")
    label = f"follow: write -> commit in SQLite, {ms[-1]['workload'] if ms else 'follow'}, p99"
    target = f"≤ {FOLLOW_P99_MS_TARGET:.0f} ms"
    p99 = med(ms[-1], "p99_ms") if ms and not ms[-1].get("error") else None
    if p99 is None:
        rows.append(_pending(label, target, ms, "follow-latency"))
    else:
        text = f"p99 {fmt_range(ms[-1], 'p99_ms', 1)} ms; p50 {fmt_range(ms[-1], 'p50_ms', 1)} ms"
        rows.append(_row(label, target, p99, text, p99 <= FOLLOW_P99_MS_TARGET, "follow-latency"))
    ms = find(data, "follow-restart")
    workload = ms[-1]["workload"] if ms else "follow"
    ok_run = ms and not ms[-1].get("error")
    label, target = (
        f"follow: restart over ingested files, {workload}",
        f"≤ {RESTART_CPU_S_TARGET:g} s CPU, no rows",
    )
    cpu = med(ms[-1], "cpu_with_rescan_s") if ok_run else None
    if cpu is None:
        rows.append(_pending(label, target, ms, "follow-restart"))
    else:
        written = med(ms[-1], "ops_written") or 0.0
        cpu_text = fmt_range(ms[-1], "cpu_with_rescan_s", 2)
        text = f"{cpu_text} s CPU (start-up and a rescan included); {written:.0f} ops"
        rows.append(
            _row(label, target, cpu, text, cpu <= RESTART_CPU_S_TARGET and written == 0, "follow-restart")
        )
    label, target = f"follow: idle CPU, {workload} quiet", f"≈ 0 (≤ {IDLE_CPU_SHARE_TARGET:.0%} of a core)"
    idle = med(ms[-1], "idle_cpu_share") if ok_run else None
    if idle is None:
        rows.append(_pending(label, target, ms, "follow-restart"))
    else:
        text = f"{idle:.2%} of a core over {ms[-1]['info'].get('idle_s', 0):g} s"
        rows.append(_row(label, target, idle, text, idle <= IDLE_CPU_SHARE_TARGET, "follow-restart"))
    ms = find(data, "replay-state-dir")
    label = f"replay --state-dir, daily: {ms[-1]['workload'] if ms else 'archive'}"
    target = f"≤ {DAILY_REPLAY_S_TARGET:g} s"
    wall = med(ms[-1], "wall_s") if ms and not ms[-1].get("error") else None
    if wall is None:
        rows.append(_pending(label, target, ms, "replay-state-dir"))
    else:
        text = (
            f"{fmt_range(ms[-1], 'wall_s', 2)} s wall, {fmt_range(ms[-1], 'cpu_s', 2)} s CPU "
            f"(the replay itself, start-up aside: {fmt_range(ms[-1], 'replay_s', 2)} s)"
        )
        rows.append(_row(label, target, wall, text, wall <= DAILY_REPLAY_S_TARGET, "replay-state-dir"))
    return rows


def _batching(data: dict[str, Any]) -> dict[str, Any]:
    batched = [m for m in data["measurements"] if m["id"].startswith("replay-convex-delay")]
    naive = [m for m in data["measurements"] if m["id"].startswith("naive-delay")]
    label = "batching vs one mutation per op (5 ms per request)"
    target = f"≥ {BATCHING_FACTOR_TARGET}x the events/s"
    b = med(batched[-1], "eps") if batched and not batched[-1].get("error") else None
    n = med(naive[-1], "eps") if naive and not naive[-1].get("error") else None
    if b is None or n is None or n == 0:
        return _pending(label, target, batched + naive, "batching")
    factor = b / n
    text = f"{factor:,.0f}x ({b:,.0f} vs {n:,.0f} events/s)"
    return _row(label, target, factor, text, factor >= BATCHING_FACTOR_TARGET, "batching")


def _latency(data: dict[str, Any]) -> dict[str, Any]:
    ms = find(data, "latency")
    flush = float(ms[-1]["info"].get("flush_ms", 50.0)) if ms else 50.0
    label = "latency, live pipe at 100 events/s, p99"
    target = f"≤ {flush + LATENCY_SLACK_MS:.0f} ms (flush {flush:.0f} ms + {LATENCY_SLACK_MS:.0f} ms)"
    p99 = med(ms[-1], "p99_ms") if ms and not ms[-1].get("error") else None
    if p99 is None:
        return _pending(label, target, ms, "latency")
    text = f"p99 {fmt_range(ms[-1], 'p99_ms', 1)} ms; p50 {fmt_range(ms[-1], 'p50_ms', 1)} ms"
    return _row(label, target, p99, text, p99 <= flush + LATENCY_SLACK_MS, "latency")


def _memory(data: dict[str, Any]) -> list[dict[str, Any]]:
    ms = find(data, "memory-spool")
    label = "peak RSS, 1M events with the sink unreachable"
    target = f"≤ 150 MB ({RSS_TARGET_BYTES / 2**20:.0f} MiB)"
    rss = med(ms[-1], "peak_rss_mib") if ms and not ms[-1].get("error") else None
    if rss is None:
        return [_pending(label, target, ms, "memory-spool")]
    m = ms[-1]
    label = f"peak RSS, {m['workload']} with the sink unreachable"
    ok = rss * 2**20 <= RSS_TARGET_BYTES
    note = (
        ""
        if med(m, "input_fully_taken_before_drain") == 1.0
        else "the daemon stopped taking input before the sink came back"
    )
    drain = _row(
        f"drain time once the sink is back, {m['workload']}",
        "(reported)",
        med(m, "drain_s"),
        f"{fmt_range(m, 'drain_s', 1)} s = {fmt_range(m, 'drain_eps')} events/s",
        None,
        "memory-spool",
    )
    drain["status"] = "info"
    return [
        _row(label, target, rss, f"{fmt_range(m, 'peak_rss_mib', 1)} MiB", ok, "memory-spool", note),
        drain,
    ]


def _soak(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One connection carrying many threads: memory flat in what it has carried (bench/soak.py)."""
    rows = []
    for m in find(data, "soak"):
        label = f"soak, one connection, {m['workload']} threads: peak RSS"
        target = f"≤ {SOAK_GROWTH_TARGET:.2f}x the RSS after the first threads"
        growth = med(m, "growth")
        if m.get("error") or growth is None:
            rows.append(_pending(label, target, [m], "soak"))
            continue
        peak, base = fmt_range(m, "peak_rss_mib", 1), fmt_range(m, "baseline_rss_mib", 1)
        text = f"{growth:.2f}x ({peak} MiB vs {base} MiB after {m['info']['baseline_threads']:,} threads)"
        rows.append(_row(label, target, growth, text, growth <= SOAK_GROWTH_TARGET, "soak"))
    return rows


def _scaling_row(data: dict[str, Any]) -> dict[str, Any]:
    label = "scaling, µs/event from 10k to 1M events (codex)"
    target = f"flat: fitted change ≤ {FLAT_PER_DECADE:.0%} of the mean per decade"
    sc = scaling(data)
    if not sc or "us_per_event" not in sc:
        return _pending(label, target, find(data, "replay-null"), "scaling")
    key = "us_per_event_net" if "us_per_event_net" in sc else "us_per_event"
    fit = sc[key]
    share = fit["per_decade_share"]
    text = (
        f"{fit['slope']:+.2f} µs/event per decade ({share:+.1%} of {fit['mean']:.2f} µs), "
        f"{'start-up excluded' if key.endswith('net') else 'start-up included'}"
    )
    return _row(label, target, share, text, abs(share) <= FLAT_PER_DECADE, "scaling")
