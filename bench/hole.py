"""Starting, querying and stopping the blackhole (bench/blackhole.py) from the harness."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from bench.procs import HARNESS_CORE, PYTHON, ROOT, bench_env, pinned


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Blackhole:
    port: int
    proc: subprocess.Popen[bytes]
    cmd: list[str]
    started_ns: int
    """CLOCK_MONOTONIC when it reported `listening`."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _get(self, path: str) -> Any:
        r = httpx.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = self._get("/_bench/stats")
        return stats

    def markers(self) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in self._get("/_bench/markers")]

    def reset(self) -> None:
        httpx.post(self.url + "/_bench/reset", timeout=30).raise_for_status()

    def wait_ops(self, expected: int, timeout: float, idle: float = 5.0) -> dict[str, int]:
        """Poll until `expected` ops arrived, or `timeout`, or (once ops flow) none for `idle` s.

        Before the first op, only `timeout` applies: a client in retry backoff may take a while.
        """
        deadline = time.monotonic() + timeout
        last_ops, last_change = 0, time.monotonic()
        while True:
            stats = self.stats()
            now = time.monotonic()
            if stats["ops"] >= expected or now > deadline:
                return stats
            if stats["ops"] != last_ops:
                last_ops, last_change = stats["ops"], now
            elif last_ops and now - last_change > idle:
                return stats
            time.sleep(0.01)


@contextmanager
def blackhole(*, port: int = 0, delay_ms: float = 0.0, markers: bool = False) -> Iterator[Blackhole]:
    cmd = [PYTHON, "-m", "bench.blackhole", "--port", str(port), "--delay-ms", str(delay_ms)]
    if markers:
        cmd.append("--markers")
    cmd = pinned(cmd, HARNESS_CORE)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=bench_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("listening "):
            raise RuntimeError(f"blackhole did not start: {line!r}")
        yield Blackhole(int(line.split()[1]), proc, cmd, time.monotonic_ns())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
