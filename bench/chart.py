"""docs/benchmarks.png: throughput and per-event cost by workload size (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.targets import SOAK_GROWTH_TARGET, find, scaling


def _err(m: dict[str, Any], key: str) -> tuple[float, float, float] | None:
    s = m.get("summary", {}).get(key)
    if not s:
        return None
    return s["median"], s["median"] - s["min"], s["max"] - s["median"]


def draw(data: dict[str, Any], out: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax1, ax2, ax3 = axes

    # 1. events/s by size (codex workloads): ceiling vs daemon
    keys = {
        "ceiling": "ceiling_eps",
        "replay --sink null": "eps",
        "replay --sink null, net of start-up": "net_eps",
    }
    series: dict[str, list[tuple[int, tuple[float, float, float]]]] = {label: [] for label in keys}
    for m in find(data, "replay-null"):
        w = data["workloads"].get(m["workload"], {})
        if m.get("error") or w.get("profile") != "codex":
            continue
        for label, key in keys.items():
            e = _err(m, key)
            if e:
                series[label].append((int(w["events"]), e))
    for label, pts in series.items():
        if pts:
            pts.sort()
            ax1.errorbar(
                [p[0] for p in pts],
                [p[1][0] for p in pts],
                yerr=[[p[1][1] for p in pts], [p[1][2] for p in pts]],
                marker="o",
                capsize=3,
                label=label,
            )
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("events in the workload (codex mix)")
    ax1.set_ylabel("events/s (one core)")
    ax1.set_title("Throughput by workload size")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()

    # 2. µs/event by size, raw and net of start-up
    sc = scaling(data)
    if sc and sc.get("points"):
        pts = sc["points"]
        xs = [p["events"] for p in pts]
        ax2.plot(xs, [p["us_per_event"] for p in pts], marker="o", label="µs/event (wall)")
        if all(p.get("us_per_event_net") is not None for p in pts):
            ax2.plot(xs, [p["us_per_event_net"] for p in pts], marker="s", label="µs/event net of start-up")
    ax2.set_xscale("log")
    ax2.set_xlabel("events in the workload (codex mix)")
    ax2.set_ylabel("µs per event")
    ax2.set_ylim(bottom=0)
    ax2.set_title("Per-event cost (replay --sink null)")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend()

    # 3. events/s by workload and path
    labels, values, colors = [], [], []
    for m in find(data, "replay-null"):
        if m.get("error"):
            continue
        for what, key, color in (("ceiling", "ceiling_eps", "#999999"), ("null", "eps", "#1f77b4")):
            s = m.get("summary", {}).get(key)
            if s:
                labels.append(f"{m['workload']}\n{what}")
                values.append(s["median"])
                colors.append(color)
    for mid, what, color in (("replay-sqlite", "sqlite", "#2ca02c"), ("replay-convex", "convex", "#d62728")):
        for m in find(data, mid):
            s = m.get("summary", {}).get("eps")
            if s and not m.get("error"):
                labels.append(f"{m['workload']}\n{what}")
                values.append(s["median"])
                colors.append(color)
    if values:
        ax3.bar(range(len(values)), values, color=colors)
        ax3.set_xticks(range(len(values)), labels, rotation=70, fontsize=7)
        ax3.set_yscale("log")
    ax3.set_ylabel("events/s (median)")
    ax3.set_title("Events/s by workload and sink")
    ax3.grid(True, axis="y", which="both", alpha=0.3)

    fig.suptitle(f"codex-ingestor benchmarks, {data['meta']['started']} ({data['meta']['plan']} plan)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def draw_soak(data: dict[str, Any], out: Path) -> bool:
    """docs/benchmarks-soak.png: the daemon's RSS after every step of threads, one panel per soak run,
    with the target (the peak within `SOAK_GROWTH_TARGET` times the RSS at the baseline)."""
    runs = [m for m in find(data, "soak") if not m.get("error")]
    if not runs:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(runs), figsize=(7 * len(runs), 4.2), squeeze=False)
    for ax, m in zip(axes[0], runs, strict=True):
        points = m["info"]["points"]
        baseline = m["summary"]["baseline_rss_mib"]["median"]
        ax.plot([p["threads"] for p in points], [p["rss_mib"] for p in points], marker=".", label="RSS")
        ax.axhline(baseline * SOAK_GROWTH_TARGET, linestyle="--", color="#d62728", label="target: peak below")
        ax.axvline(m["info"]["baseline_threads"], linestyle=":", color="#999999", label="baseline")
        ax.set_xlabel("threads carried by the connection")
        ax.set_ylabel("daemon RSS (MiB)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"soak {m['workload']}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    meta = data["meta"]
    fig.suptitle(f"One connection, many threads: memory ({meta['started']}, {meta['plan']} plan)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True
