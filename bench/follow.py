"""Following session files (`run --follow`, `replay --state-dir`): latency, restart, idle, daily replay.

The session files are a real Codex 0.169 session file (fixtures/) copied with fresh ids per file, so
every file is its own session with its own rows.

- latency: the daemon follows FILES files; lines are appended to them round-robin at RATE lines/s,
  each carrying a sequence number; the harness polls the store (every 2 ms) for the rows and takes
  write -> commit time per line.
- restart + idle: FILES files already ingested and finished; the daemon started again: its CPU until
  it has looked at every file and through its first rescan, the rows it wrote (none expected), then
  its CPU over IDLE_S seconds of quiet.
- daily replay: `replay --state-dir` over a sessions archive (bench/archive.py: the 1 GB one in the full
  plan) imported once, then each run a new day of about 1 MB of session files: wall and CPU time of
  the replay that picks them up, and `ingestor usage` over the store.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final

import orjson

from bench import archive_gen, commands
from bench.procs import RESULTS_TMP, ROOT, bench_env, ingestor_cmd, pinned, proc_status
from bench.results import Measurement, show_cmd
from bench.stats import percentile

RECORDING: Final = next(
    (ROOT / "fixtures" / "codex-0.169.0" / "sessions" / "exec-command_outputs").glob("rollout-*.jsonl")
)
TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")


def session_copy(index: int, head_lines: int | None = None) -> tuple[str, bytes]:
    """A copy of the recording as session `index` (its ids its own): its file name and content."""
    data = RECORDING.read_bytes()
    old = RECORDING.name.removesuffix(".jsonl")[-36:]
    new = str(uuid.UUID(int=index + 1))
    data = data.replace(old.encode(), new.encode()).replace(b'"call_', f'"call_{index}_'.encode())
    if head_lines is not None:
        data = b"".join(data.splitlines(keepends=True)[:head_lines])
    return f"rollout-2026-12-05T00-00-00-{new}.jsonl", data


def write_sessions(root: Path, count: int, head_lines: int | None = None) -> list[Path]:
    day = root / "2026" / "12" / "05"
    day.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        name, data = session_copy(i, head_lines)
        (day / name).write_bytes(data)
        paths.append(day / name)
    return paths


def follow_cmd(sessions: Path, db: Path, state: Path, *extra: str) -> list[str]:
    return ingestor_cmd(
        "run", "--follow", str(sessions), "--sink", f"sqlite:{db}", "--state-dir", str(state), *extra
    )


def checkpointed_files(state: Path, *, finished: bool) -> int:
    """Files with a checkpoint (their lines stored so far), or only those finished."""
    where = " WHERE finished = 1" if finished else ""
    try:
        with sqlite3.connect(state / "checkpoints.db") as conn:
            return int(conn.execute(f"SELECT count(*) FROM checkpoints{where}").fetchone()[0])
    except sqlite3.Error:
        return 0


class Daemon:
    """A running `ingestor run --follow`, its stderr collected by a thread (a full pipe would block it)."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=bench_env(), cwd=ROOT)
        self.lines: list[bytes] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if b"sources ready" in line:
                self.ready.set()

    def cpu_s(self) -> float:
        return proc_status(self.proc.pid).get("ticks", 0) / TICKS_PER_S

    def stop(self) -> dict[str, float]:
        """SIGTERM, then the summary it logged (at info level or below)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        self._reader.join()
        return summary(b"".join(self.lines))


def summary(stderr: bytes) -> dict[str, float]:
    for line in stderr.splitlines():
        if b'"pipeline done"' in line:
            return dict(orjson.loads(line))
    raise RuntimeError("the daemon logged no summary:\n" + stderr[-2000:].decode(errors="replace"))


def _workdir(prefix: str) -> Path:
    RESULTS_TMP.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=RESULTS_TMP, prefix=prefix))


def latency(runs: int, files: int, rate: float, count: int) -> Measurement:
    m = Measurement("follow-latency", f"follow-{files}-files", "")
    m.info.update(files=files, rate=rate, count=count, poll_ms=2)
    for _ in range(runs):
        work = _workdir("follow-latency-")
        try:
            sessions, db, state = work / "sessions", work / "live.db", work / "state"
            paths = write_sessions(sessions, files, head_lines=3)
            cmd = pinned(follow_cmd(sessions, db, state))
            m.command = show_cmd([c.replace(str(work), "$TMP") for c in cmd])
            daemon = Daemon(cmd)
            try:
                deadline = time.monotonic() + 300
                while checkpointed_files(state, finished=False) < files and time.monotonic() < deadline:
                    time.sleep(0.1)  # not measured: the first read of every file
                conn = sqlite3.connect(db)
                last_id = conn.execute("SELECT coalesce(max(id), 0) FROM events_raw").fetchone()[0]
                sent: dict[int, int] = {}
                seen: dict[int, int] = {}
                t0 = time.monotonic()
                outs = [p.open("ab", buffering=0) for p in paths]
                for seq in range(count):
                    pause = t0 + seq / rate - time.monotonic()
                    while pause > 0.002:  # poll the store while waiting for the next write
                        last_id = _poll(conn, last_id, seen)
                        pause = t0 + seq / rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    line = _marked_line(seq)
                    sent[seq] = time.monotonic_ns()
                    outs[seq % files].write(line)
                for out in outs:
                    out.close()
                deadline = time.monotonic() + 30
                while len(seen) < count and time.monotonic() < deadline:
                    last_id = _poll(conn, last_id, seen)
                conn.close()
            finally:
                daemon.stop()
            lat = sorted((seen[s] - sent[s]) / 1e6 for s in sent if s in seen)
            if not lat:
                raise RuntimeError("no line reached the store")
            m.add(
                p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99), max_ms=lat[-1], lost=count - len(lat)
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return m


def _marked_line(seq: int) -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return (
        orjson.dumps({"timestamp": stamp, "type": "event_msg", "payload": {"type": "bench_mark", "seq": seq}})
        + b"\n"
    )


def _poll(conn: sqlite3.Connection, last_id: int, seen: dict[int, int]) -> int:
    rows = conn.execute("SELECT id, payload FROM events_raw WHERE id > ? ORDER BY id", (last_id,)).fetchall()
    now = time.monotonic_ns()
    for row_id, payload in rows:
        last_id = row_id
        value = orjson.loads(payload) if payload else {}
        inner = value.get("payload") if isinstance(value, dict) else None
        if isinstance(inner, dict) and inner.get("type") == "bench_mark":
            seen.setdefault(int(inner["seq"]), now)
    if not rows:
        time.sleep(0.002)
    return last_id


def restart_and_idle(runs: int, files: int, idle_s: float) -> Measurement:
    m = Measurement("follow-restart", f"follow-{files}-files", "")
    m.info.update(files=files, idle_s=idle_s)
    work = _workdir("follow-restart-")
    try:
        sessions, db, state = work / "sessions", work / "live.db", work / "state"
        write_sessions(sessions, files, head_lines=6)
        first = Daemon(follow_cmd(sessions, db, state, "--follow-idle", "1"))
        deadline = time.monotonic() + 900
        while checkpointed_files(state, finished=True) < files and time.monotonic() < deadline:
            time.sleep(0.2)
        first.stop()
        if (finished := checkpointed_files(state, finished=True)) < files:
            raise RuntimeError(f"only {finished} of {files} files finished before the timeout")
        for _ in range(runs):
            cmd = pinned(follow_cmd(sessions, db, state, "--log-level", "debug"))
            m.command = show_cmd([c.replace(str(work), "$TMP") for c in cmd])
            began = time.monotonic()
            daemon = Daemon(cmd)
            if not daemon.ready.wait(120):  # every file looked at
                daemon.stop()
                raise RuntimeError("the daemon was not ready within 120 s")
            ready_s = time.monotonic() - began
            ready_cpu = daemon.cpu_s()
            ready_at = time.monotonic()
            time.sleep(1.5)  # through its first rescan (1 s after it was ready)
            settled = daemon.cpu_s()
            time.sleep(idle_s)
            idle_cpu = daemon.cpu_s() - settled
            idle_wall = time.monotonic() - ready_at - 1.5
            done = daemon.stop()
            m.add(
                ready_s=ready_s,
                cpu_s=ready_cpu,
                cpu_with_rescan_s=settled,
                idle_cpu_share=idle_cpu / idle_wall,
                ops_written=float(done["ops_written"]),
                streams_opened=float(done["streams_opened"]),
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return m


def daily_replay(root: Path, meta: dict[str, Any], runs: int, new_mb: int = 1) -> Measurement:
    """`replay --state-dir` over a sessions archive (bench/archive.py) imported once, untimed; then
    `runs` days, each adding `new_mb` MB of new session files in a new day directory and timing the
    replay that picks them up. Also `ingestor usage` over the imported store, `runs` times."""
    m = Measurement("replay-state-dir", f"{meta['name']}+{new_mb}MB", "")
    work = _workdir("follow-daily-")
    try:
        # Hard links: the new days go into this copy, the cached archive stays as generated.
        sessions, db, state = work / "sessions", work / "store.db", work / "state"
        subprocess.run(["cp", "-al", str(root / "sessions"), str(sessions)], check=True)
        began = time.perf_counter()
        replay = commands.replay(
            sessions, f"sqlite:{db}", "--state-dir", str(state), "--log-level", "warning"
        )
        subprocess.run(pinned(replay), check=True, capture_output=True, env=bench_env(), cwd=ROOT)
        m.info.update(
            archive_files=meta["files"], archive_bytes=meta["bytes"], import_s=time.perf_counter() - began
        )
        usage = pinned(ingestor_cmd("usage", "--by", "day", "--json", "--sink", f"sqlite:{db}"))
        m.info["usage_command"] = show_cmd([c.replace(str(work), "$TMP") for c in usage])
        cmd = pinned(commands.replay(sessions, f"sqlite:{db}", "--state-dir", str(state)))
        m.command = show_cmd([c.replace(str(work), "$TMP") for c in cmd])
        for day in range(runs):
            new_files, new_bytes = archive_gen.write_day(sessions, meta["files"], day, new_mb * 2**20)
            before = os.times()
            began = time.perf_counter()
            done = subprocess.run(cmd, check=True, capture_output=True, env=bench_env(), cwd=ROOT)
            wall = time.perf_counter() - began
            after = os.times()
            cpu = (after.children_user - before.children_user) + (
                after.children_system - before.children_system
            )
            replay_done = next(
                orjson.loads(line) for line in done.stderr.splitlines() if b'"replay done"' in line
            )
            m.add(
                wall_s=wall,
                cpu_s=cpu,
                replay_s=float(replay_done["seconds"]),  # the replay itself: no interpreter start-up
                files_read=float(replay_done["files"]),
                new_files=float(new_files),
                new_mib=new_bytes / 2**20,
            )
            began = time.perf_counter()
            subprocess.run(usage, check=True, capture_output=True, env=bench_env(), cwd=ROOT)
            m.add(usage_s=time.perf_counter() - began)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return m
