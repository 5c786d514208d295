"""Running the programs under test: pinned to a core, timed, with their peak RSS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results"
RESULTS_TMP = RESULTS / "tmp"
PYTHON = sys.executable
DAEMON_CORE = 0
HARNESS_CORE = 1


def pinned(cmd: Sequence[str], core: int = DAEMON_CORE) -> list[str]:
    """`cmd` under `taskset -c core` (unchanged where taskset or the core is missing)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core), *cmd]
    return list(cmd)


def pin_self(core: int = HARNESS_CORE) -> None:
    """Keep the harness (and the blackhole it starts) off the daemon's core."""
    if (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})


COMPILED_DAEMON = ROOT / ".venv-compiled" / "bin" / "ingestor"
"""The build users run (`pip install .`, the Docker image: setup.py compiles the hot path), which
bench/run.sh keeps current. Without it (a bare `python -m bench`), the development install."""


def ingestor_cmd(*args: str) -> list[str]:
    """The daemon's command line: the compiled build, else the development install's console script,
    else `python -m ingestor`."""
    for script in (COMPILED_DAEMON, Path(PYTHON).parent / "ingestor"):
        if script.exists():
            return [str(script), *args]
    return [PYTHON, "-m", "ingestor", *args]


def bench_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    env.pop("CONVEX_URL", None)
    env.pop("CONVEX_ADMIN_KEY", None)
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True, slots=True)
class Finished:
    wall_s: float
    maxrss_kib: int
    """Peak RSS of the program (VmHWM), KiB."""
    returncode: int
    stdout: bytes
    stderr: bytes


class ProcessError(RuntimeError):
    pass


def run(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: IO[bytes] | int | None = subprocess.DEVNULL,
    capture_stdout: bool = True,
    stdout_file: IO[bytes] | None = None,
    timeout: float = 1800.0,
    check: bool = True,
) -> Finished:
    """Run `cmd` to completion: wall time from spawn to exit, and its peak RSS (wait4)."""
    out_target: IO[bytes] | int = subprocess.PIPE if capture_stdout else subprocess.DEVNULL
    if stdout_file is not None:
        out_target = stdout_file
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=dict(env or bench_env()), stdin=stdin, stdout=out_target, stderr=subprocess.PIPE, cwd=ROOT
    )
    hwm = HwmWatch(proc.pid)
    hwm.start()
    stdout, stderr = _communicate(proc, timeout)
    hwm.stop_event.set()  # the child has closed its pipes: it is exiting; its last sample is in
    _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    hwm.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if check and proc.returncode != 0:
        tail = stderr[-3000:].decode(errors="replace")
        raise ProcessError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return Finished(wall, hwm.peak_kib, proc.returncode, stdout, stderr)


class HwmWatch(threading.Thread):
    """Samples VmHWM (peak RSS of the current program image) every 10 ms until stopped.

    wait4's ru_maxrss is not used: Linux folds into it the RSS of the harness at fork time (the
    pre-exec copy), which would report the harness's size for any small child.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, proc_status(self.pid).get("VmHWM", 0))
            if self.stop_event.wait(0.01):
                return


def _communicate(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes]:
    """Read the pipes to EOF without reaping the child (wait4 does that, after the last sample)."""
    bufs: dict[str, bytes] = {"out": b"", "err": b""}

    def drain(name: str, stream: IO[bytes] | None) -> None:
        if stream is not None:
            bufs[name] = stream.read()
            stream.close()

    threads = [
        threading.Thread(target=drain, args=("out", proc.stdout)),
        threading.Thread(target=drain, args=("err", proc.stderr)),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            proc.kill()
            t.join()
            raise ProcessError(f"{proc.args!r} timed out after {timeout:.0f} s")
    return bufs["out"], bufs["err"]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (KiB) and CPU ticks (utime+stime) of a live process, from /proc."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            out["ticks"] = int(fields[11]) + int(fields[12])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def warm_cache(path: Path) -> None:
    """Read `path` (a directory: every file in it) once, so that every measured run starts with it in
    the page cache."""
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            with file.open("rb") as f:
                while f.read(1 << 24):
                    pass
