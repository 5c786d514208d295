"""A sessions archive (bench/archive_gen.py) replayed whole: into nothing, into SQLite, as one file, into
Convex; and the peer usage tool, ccusage, scanning the same files.

Every run measures its commands back to back, so that each comparison (store vs null sink, archive vs
the same lines as one file, import vs ccusage) sees the same machine state.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench import archive_gen, commands, delivery
from bench.procs import RESULTS_TMP, ROOT, bench_env, ingestor_cmd, pinned, run, warm_cache
from bench.results import Measurement, show_cmd
from bench.stats import percentile
from bench.workloads import DATA, _short

MIB = 1024 * 1024
CCUSAGE = ROOT / "node_modules" / "@ccusage" / "codex" / "dist" / "index.js"
"""ccusage's Codex edition (pinned npm devDependency @ccusage/codex), run with node, offline."""


def name(files: int) -> str:
    return f"archive-{_short(files)}"


def _version() -> str:
    """Changes whenever the generator or the session files it copies change: the cache key."""
    h = hashlib.sha256(Path(archive_gen.__file__).read_bytes())
    for path, weight in archive_gen.session_files():
        h.update(f"{path.name}:{weight}".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:10]


def ensure(files: int, seed: int = 1) -> tuple[Path, dict[str, Any]]:
    """The archive of `files` session files (generated once, cached in bench-results/data/) and its
    description: `root/sessions/...` (what `CODEX_HOME/sessions` holds) and `root/all.jsonl`."""
    DATA.mkdir(parents=True, exist_ok=True)
    stem = f"{name(files)}-s{seed}"
    root = DATA / f"{stem}-{_version()}"
    side = root / "meta.json"
    if not side.exists():
        for stale in DATA.glob(f"{stem}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        building = Path(tempfile.mkdtemp(dir=DATA, prefix=f".{stem}-"))
        archive_gen.write(building, files, seed)
        meta = _describe(building, files, seed)
        meta["file"] = str(root.relative_to(ROOT))
        (building / "meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        building.rename(root)  # complete or absent: an interrupted generation leaves a dot-directory
    meta = orjson.loads(side.read_bytes())
    return root, meta


def _describe(root: Path, files: int, seed: int) -> dict[str, Any]:
    lengths: list[int] = []
    legacy = 0
    for path in sorted((root / "sessions").rglob("*.jsonl")):
        data = path.read_bytes()
        lines = [len(line) + 1 for line in data.splitlines()]
        lengths += lines
        if b'"cli_version":"0.63.0"' in data[:4096]:
            legacy += len(lines)
    lengths.sort()
    return {
        "name": name(files),
        "profile": "archive",
        "description": f"sessions archive: {files:,} session files (0.169 and 0.63) over a year, "
        "and the same lines as one file",
        "seed": seed,
        "files": files,
        "events": len(lengths),
        "bytes": sum(lengths),
        "line_median": percentile(lengths, 50),
        "line_p99": percentile(lengths, 99),
        "line_max": lengths[-1],
        "legacy_share": legacy / len(lengths),
        "command": f"python -m bench.archive_gen --files {files} --seed {seed} --out DIR",
    }


def _fresh_store(work: Path) -> Path:
    for leftover in work.glob("store.db*"):
        leftover.unlink()
    return work / "store.db"


def _rows(db: Path) -> int:
    """Rows in every table of the store."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)


def _usage_cmd(db: Path) -> list[str] | None:
    """`ingestor usage` over the store (issue 14), when this build has the command."""
    help_text = commands.help_of("usage")
    if "--sink" not in help_text:
        return None
    return ingestor_cmd("usage", "--by", "day", "--json", "--sink", f"sqlite:{db}")


def measure(root: Path, meta: dict[str, Any], runs: int) -> Measurement:
    """Per run, back to back: `replay DIR` into null and into a new SQLite store, the same lines as one
    file into null and into a new store, ccusage over DIR; in the first run also a second replay of
    DIR into the filled store (which must add no row), and `ingestor usage` over it if it exists."""
    sessions, joined = root / "sessions", root / "all.jsonl"
    files, lines, size = meta["files"], meta["events"], meta["bytes"]
    m = Measurement("archive", meta["name"], "")
    RESULTS_TMP.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=RESULTS_TMP, prefix="archive-"))
    ccusage = pinned(["node", str(CCUSAGE), "daily", "--offline", "--json"])
    ccusage_env = bench_env({"CODEX_HOME": str(root), "LOG_LEVEL": "0"})

    def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
        return run(cmd, env=env, capture_stdout=False).wall_s

    warm_cache(root)
    try:
        db = work / "store.db"
        shown = {
            "null_dir": pinned(commands.replay(sessions, "null")),
            "sqlite_dir": pinned(commands.replay(sessions, f"sqlite:{db}")),
            "null_one": pinned(commands.replay(joined, "null")),
            "sqlite_one": pinned(commands.replay(joined, f"sqlite:{db}")),
        }
        m.command = show_cmd([c.replace(str(work), "$TMP") for c in shown["sqlite_dir"]])
        m.info["commands"] = {
            key: show_cmd([c.replace(str(work), "$TMP") for c in cmd]) for key, cmd in shown.items()
        }
        m.info["ccusage_command"] = "CODEX_HOME=" + show_cmd([str(root), *ccusage])
        for number in range(runs):
            null_dir = timed(shown["null_dir"])
            _fresh_store(work)
            sqlite_dir = timed(shown["sqlite_dir"])
            if number == 0:
                stored = _rows(db)
                again = timed(shown["sqlite_dir"])
                m.add(rows=stored, second_replay_s=again, second_replay_new_rows=_rows(db) - stored)
                usage = _usage_cmd(db)
                if usage is not None:
                    m.info["usage_command"] = show_cmd([c.replace(str(work), "$TMP") for c in pinned(usage)])
                    m.add(usage_s=timed(pinned(usage)))
            m.add(store_mib=sum(p.stat().st_size for p in work.glob("store.db*")) / MIB)
            null_one = timed(shown["null_one"])
            _fresh_store(work)
            sqlite_one = timed(shown["sqlite_one"])
            ccusage_s = timed(ccusage, ccusage_env) if CCUSAGE.exists() else None
            m.add(
                null_dir_s=null_dir,
                sqlite_dir_s=sqlite_dir,
                null_one_s=null_one,
                sqlite_one_s=sqlite_one,
                sqlite_vs_null=sqlite_dir / null_dir,
                per_file_ms=(sqlite_dir - sqlite_one) / files * 1000,
                null_per_file_ms=(null_dir - null_one) / files * 1000,
                archive_vs_one=sqlite_dir / sqlite_one,
                eps=lines / sqlite_dir,
                mibs=size / MIB / sqlite_dir,
                null_eps=lines / null_dir,
            )
            if ccusage_s is not None:
                m.add(ccusage_s=ccusage_s, import_vs_ccusage=sqlite_dir / ccusage_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "usage_s" in m.series and "ccusage_s" in m.series:
        m.add(ccusage_vs_usage=m.median("ccusage_s") / m.median("usage_s"))  # type: ignore[operator]
    return m


def convex(root: Path, meta: dict[str, Any], runs: int) -> Measurement:
    """`replay DIR --sink convex` into the blackhole, until every op is confirmed."""
    sessions = root / "sessions"
    _, expected = delivery.ops_file(sessions)
    m = delivery.convex_blackhole(sessions, meta, expected, runs)
    m.id = "archive-convex"
    m.info["lines"] = meta["events"]
    for wall in m.series.get("wall_s", []):
        m.add(us_per_line=wall / meta["events"] * 1e6)
    return m
