"""What the suite runs: the full plan (five runs, up to 1M events) and the smoke plan (tiny, one run)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.workloads import Workload


@dataclass(frozen=True)
class Plan:
    name: str
    runs: int
    throughput: tuple[Workload, ...]
    """Ceiling vs `replay --sink null`, each on its own."""
    scaling_profile: str
    """The throughput workloads of this profile, by size, give the scaling fit."""
    small: Workload
    """The small-events workload (its own absolute target)."""
    sqlite: Workload
    convex: Workload
    batching: Workload
    naive_limit: int
    """Ops the naive client sends per run (its rate is steady: each op is one round trip)."""
    delay_ms: float
    latency_count: int
    latency_rate: float
    memory: Workload
    memory_runs: int
    profile: Workload
    profile_large: Workload | None
    """Also profile `replay --sink null` on this one: where per-event cost grows with N, if it does."""
    soak: tuple[tuple[str, int, int], ...]
    """(variant, threads, step) of each soak run (bench/soak.py)."""
    archives: tuple[int, ...]
    """Session files in each sessions archive (bench/archive.py); the first also goes into Convex."""
    archive_large_runs: int = 1
    """Runs of the archives after the first (20,000 files: ~1 GB, five commands of minutes each)."""
    follow_files: int = 1000
    """Files followed while the write -> commit latency is measured (bench/follow.py)."""
    follow_rate: float = 200.0
    follow_count: int = 2000
    restart_files: int = 10_000
    """Files already ingested when the daemon restarts (and stays idle for `idle_s`)."""
    restart_runs: int = 3
    """Restarts measured (each one waits `idle_s`; at most `runs`)."""
    idle_s: float = 30.0
    daily_archive: int = 20_000
    """Session files in the archive (bench/archive.py; 20,000: about 1 GB, the archive section's larger
    one) that a daily `replay --state-dir` runs over, imported once, plus 1 MB of new files per run."""


CODEX_10K = Workload("codex", 10_000)
CODEX_100K = Workload("codex", 100_000)
CODEX_1M = Workload("codex", 1_000_000)
SMALL_1M = Workload("small", 1_000_000)
MIX_100K = Workload("mix", 100_000)

FULL = Plan(
    name="full",
    runs=5,
    throughput=(CODEX_10K, CODEX_100K, CODEX_1M, SMALL_1M, MIX_100K),
    scaling_profile="codex",
    small=SMALL_1M,
    sqlite=CODEX_100K,
    convex=CODEX_100K,
    batching=CODEX_100K,
    naive_limit=1000,
    delay_ms=5.0,
    latency_count=1000,
    latency_rate=100.0,
    memory=CODEX_1M,
    memory_runs=5,
    profile=CODEX_100K,
    profile_large=CODEX_1M,
    soak=(("short", 100_000, 2000), ("long", 200, 10)),
    archives=(2000, 20_000),
)

SMOKE = Plan(
    name="smoke",
    runs=1,
    throughput=(Workload("codex", 2_000), CODEX_10K, Workload("small", 10_000), Workload("mix", 10_000)),
    scaling_profile="codex",
    small=Workload("small", 10_000),
    sqlite=CODEX_10K,
    convex=CODEX_10K,
    batching=CODEX_10K,
    naive_limit=100,
    delay_ms=5.0,
    latency_count=100,
    latency_rate=100.0,
    memory=CODEX_10K,
    memory_runs=1,
    profile=CODEX_10K,
    profile_large=None,
    soak=(("short", 200, 20), ("long", 4, 1)),
    archives=(50,),
    follow_files=100,
    follow_rate=100.0,
    follow_count=200,
    restart_files=500,
    idle_s=5.0,
    daily_archive=50,
)

SECTIONS = (
    "throughput", "sqlite", "convex", "batching", "latency", "memory", "soak", "archive", "follow", "profile",
)  # fmt: skip
