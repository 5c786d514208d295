"""The workload files: generated once per (profile, size, seed, generator version) and cached."""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import gen
from bench.procs import RESULTS
from bench.profiles import PROFILES
from bench.stats import percentile
from bench.templates import Templates, app_server_files

BENCH_DIR = Path(__file__).resolve().parent
DATA = RESULTS / "data"


@dataclass(frozen=True, slots=True)
class Workload:
    profile: str
    events: int
    seed: int = 1

    @property
    def name(self) -> str:
        return f"{self.profile}-{_short(self.events)}"


def _short(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def generator_version() -> str:
    """Changes whenever the generator or the fixtures it samples change: the cache key."""
    h = hashlib.sha256()
    for name in ("gen.py", "profiles.py", "templates.py", "text.py"):
        h.update((BENCH_DIR / name).read_bytes())
    for p in app_server_files():
        h.update(p.name.encode())
        with contextlib.suppress(OSError):
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


def ensure(w: Workload, templates: Templates) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{w.name}-s{w.seed}-{generator_version()}.jsonl"
    if not path.exists():
        for stale in DATA.glob(f"{w.name}-s{w.seed}-*"):  # older generator versions
            stale.unlink()
        gen.write(path, PROFILES[w.profile], w.events, w.seed, templates)
        describe(path, w)  # write the sidecar now, while the file is hot
    return path


def describe(path: Path, w: Workload) -> dict[str, Any]:
    """Size, line-length distribution and method mix of a workload file (cached in a sidecar)."""
    side = path.with_suffix(".meta.json")
    if side.exists():
        meta: dict[str, Any] = orjson.loads(side.read_bytes())
        return meta
    lengths: list[int] = []
    mix: Counter[str] = Counter()
    with path.open("rb") as f:
        for line in f:
            lengths.append(len(line))
            obj = orjson.loads(line)
            mix[obj.get("method", "(response)")] += 1
    lengths.sort()
    meta = {
        "name": w.name,
        "profile": w.profile,
        "description": PROFILES[w.profile].description,
        "seed": w.seed,
        "threads": PROFILES[w.profile].threads,
        "legacy_threads": PROFILES[w.profile].legacy_threads,
        "events": len(lengths),
        "bytes": sum(lengths),
        "line_median": percentile(lengths, 50),
        "line_p99": percentile(lengths, 99),
        "line_max": lengths[-1],
        "legacy_share": sum(v for k, v in mix.items() if k.startswith("codex/event/")) / len(lengths),
        "top_methods": mix.most_common(8),
        "file": str(path.relative_to(BENCH_DIR.parent)),
        "command": f"python -m bench.gen --profile {w.profile} --events {w.events} --seed {w.seed} "
        f"--out {path.relative_to(BENCH_DIR.parent)}",
    }
    side.write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return meta
