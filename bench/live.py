"""The daemon on a live pipe (`ingestor run`, stdin): latency at a low rate, memory with the sink down."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from bench import commands
from bench.delivery import convex_env
from bench.hole import blackhole, free_port
from bench.procs import RESULTS_TMP, ROOT, pinned, proc_status
from bench.results import Measurement, show_cmd
from bench.stats import percentile
from bench.templates import Templates

MIB = 1024 * 1024
SPOOL_MAX = "8GiB"
DRAIN_WAIT_S = 600
"""How long the daemon may take to deliver everything once the sink is back (else: a failure)."""


@contextmanager
def daemon(
    url: str, *extra: str, spool_max: str | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], list[str]]]:
    """`ingestor run --sink convex` on core 0, stdin a pipe we write to; stopped at the end."""
    work = Path(tempfile.mkdtemp(dir=RESULTS_TMP, prefix="live-"))
    cmd = pinned(commands.run_convex_stdin(work / "state", *extra, spool_max=spool_max))
    log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, env=convex_env(url), cwd=ROOT
    )
    try:
        yield proc, [c.replace(str(work), "$TMP") for c in cmd]
    finally:
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        shutil.copyfile(work / "daemon.log", RESULTS_TMP / "last-daemon.log")  # for post-mortems
        shutil.rmtree(work, ignore_errors=True)


# -- latency ---------------------------------------------------------------------------------------


class MarkedStream:
    """A v2 conversation whose agent-message deltas carry `BENCHSEQ<ordinal>`."""

    def __init__(self, tpl: Templates) -> None:
        self.tpl = tpl
        self.thread, self.turn, self.item = "bench-thread-0001", "bench-turn-0001", "msg_bench_0001"

    def _line(self, method: str, params: dict[str, Any], sub: str = "") -> bytes:
        params = self.tpl.params("v2", method, sub, params)
        return orjson.dumps({"method": method, "params": params, "emittedAtMs": time.time_ns() // 1_000_000})

    def prologue(self) -> list[bytes]:
        thread = {"id": self.thread, "sessionId": self.thread, "cwd": "/tmp", "cliVersion": "0.169.0"}
        turn: dict[str, Any] = {"id": self.turn, "items": [], "status": "inProgress", "error": None}
        item = {"type": "agentMessage", "id": self.item, "text": ""}
        ids = {"threadId": self.thread, "turnId": self.turn}
        return [
            self._line("thread/started", {"thread": thread}),
            self._line("turn/started", {"threadId": self.thread, "turn": turn}),
            self._line("item/started", {**ids, "item": item}, "agentMessage"),
        ]

    def delta(self, seq: int) -> bytes:
        params = {
            "threadId": self.thread,
            "turnId": self.turn,
            "itemId": self.item,
            "delta": f"BENCHSEQ{seq:08d} ",
        }
        return self._line("item/agentMessage/delta", params)


def latency(runs: int, rate: float, count: int, flush_ms: float) -> Measurement:
    m = Measurement("latency", f"live-{rate:g}eps", "")
    m.info.update(rate=rate, count=count, flush_ms=flush_ms)
    RESULTS_TMP.mkdir(parents=True, exist_ok=True)
    stream = MarkedStream(Templates.load())
    with blackhole(markers=True) as bh:
        m.info["blackhole_command"] = show_cmd(bh.cmd)
        for _ in range(runs):
            bh.reset()
            with daemon(bh.url) as (proc, cmd):
                m.command = show_cmd(cmd).replace(bh.url, "$BLACKHOLE_URL")
                assert proc.stdin is not None
                fd = proc.stdin.fileno()
                for line in stream.prologue():
                    os.write(fd, line + b"\n")
                time.sleep(1.0)  # start-up and the first batch are not what is measured
                sent: dict[int, int] = {}
                t0 = time.monotonic()
                for seq in range(count):
                    target = t0 + seq / rate
                    pause = target - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    line = stream.delta(seq) + b"\n"
                    sent[seq] = time.monotonic_ns()
                    os.write(fd, line)
                deadline = time.monotonic() + 10
                received: dict[int, int] = {}
                while time.monotonic() < deadline:
                    received = {}
                    for seq, ns in bh.markers():
                        received[seq] = max(ns, received.get(seq, 0))
                    if len(received) >= count:
                        break
                    time.sleep(0.1)
            lat = sorted((received[s] - sent[s]) / 1e6 for s in sent if s in received)
            if not lat:
                raise RuntimeError("no marked line reached the blackhole")
            m.add(
                p50_ms=percentile(lat, 50),
                p90_ms=percentile(lat, 90),
                p99_ms=percentile(lat, 99),
                max_ms=lat[-1],
                lost=count - len(lat),
            )
    return m


# -- memory with the sink down ---------------------------------------------------------------------


@dataclass
class RssWatch:
    pid: int
    peak_rss_kib: int = 0
    hwm_kib: int = 0
    ticks: int = 0
    ticks_changed: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            st = proc_status(self.pid)
            if not st:
                return
            self.peak_rss_kib = max(self.peak_rss_kib, st.get("VmRSS", 0))
            self.hwm_kib = max(self.hwm_kib, st.get("VmHWM", 0))
            if st.get("ticks", 0) != self.ticks:
                self.ticks, self.ticks_changed = st["ticks"], time.monotonic()
            time.sleep(0.02)


def _feed(stdin: IO[bytes], path: Path, done: threading.Event) -> None:
    """Write the whole file into the daemon's stdin, then close it (end of input)."""
    fd = stdin.fileno()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
        stdin.close()
    except (BrokenPipeError, OSError):
        pass
    finally:
        done.set()


def memory(path: Path, meta: dict[str, Any], expected_ops: int, runs: int) -> Measurement:
    m = Measurement("memory-spool", meta["name"], "")
    m.info["expected_ops"] = expected_ops
    RESULTS_TMP.mkdir(parents=True, exist_ok=True)
    for _ in range(runs):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # The spool cap is raised so that the whole input fits: "everything goes to the spool".
        # With the default cap (1 GiB) the daemon would stop reading before the end, by design.
        with daemon(url, spool_max=SPOOL_MAX) as (proc, cmd):
            m.command = show_cmd(cmd) + " < " + meta["file"] + "   # CONVEX_URL: nothing listening"
            watch = RssWatch(proc.pid)
            watcher = threading.Thread(target=watch.run, daemon=True)
            watcher.start()
            assert proc.stdin is not None
            fed = threading.Event()
            start = time.monotonic()
            feeder = threading.Thread(target=_feed, args=(proc.stdin, path, fed), daemon=True)
            feeder.start()
            # Ingest phase: the input is all written (and closed: the daemon now waits to deliver)
            # and the daemon has gone quiet (retries aside), or it stopped taking input for a while.
            while True:
                time.sleep(0.1)
                quiet = time.monotonic() - watch.ticks_changed
                if (fed.is_set() and quiet > 1.0) or quiet > 5.0 or proc.poll() is not None:
                    break
            ingest_s = watch.ticks_changed - start
            ingest_peak = watch.hwm_kib
            all_in = fed.is_set()
            with blackhole(port=port) as bh:
                # The daemon delivers everything (its flush timeout is long), then exits.
                proc.wait(DRAIN_WAIT_S)
                feeder.join(1)
                stats = bh.stats()
                if not stats["ops"]:
                    raise RuntimeError("nothing reached the sink after it came back")
                drain_s = (stats["last_ns"] - bh.started_ns) / 1e9
                first_s = (stats["first_ns"] - bh.started_ns) / 1e9
            watch.stop.set()
            watcher.join()
            m.add(
                first_op_s=first_s,
                deliver_s=drain_s - first_s,
                ingest_peak_rss_mib=ingest_peak / 1024,
                peak_rss_mib=max(watch.hwm_kib, ingest_peak) / 1024,
                ingest_s=ingest_s,
                ingest_eps=meta["events"] / ingest_s if ingest_s > 0 else 0.0,
                drain_s=drain_s,
                drain_eps=meta["events"] / drain_s if drain_s > 0 else 0.0,
                delivered_share=stats["ops"] / expected_ops if expected_ops else 0.0,
                input_fully_taken_before_drain=1.0 if all_in else 0.0,
            )
    return m
