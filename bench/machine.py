"""What the numbers were measured on: CPU, memory, load, what else was running."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from typing import Any

from bench.procs import ROOT, ingestor_cmd


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=ROOT).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _lscpu() -> dict[str, str]:
    keep = (
        "Model name",
        "CPU(s)",
        "Thread(s) per core",
        "Core(s) per socket",
        "Hypervisor vendor",
        "L2 cache",
        "L3 cache",
    )
    out: dict[str, str] = {}
    for line in _run("lscpu").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keep:
            out[key.strip()] = value.strip()
    return out


def load() -> dict[str, Any]:
    """Load averages now and the processes using CPU right now (other than this suite)."""
    la = os.getloadavg()
    top = _run("ps", "-eo", "pcpu,rss,args", "--sort=-pcpu", "--no-headers").splitlines()[:8]
    return {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "uptime": _run("uptime").strip(),
        "loadavg": list(la),
        "top_processes": [" ".join(t.split()[:2]) + " " + " ".join(t.split()[2:])[:100] for t in top],
    }


def describe() -> dict[str, Any]:
    mem = _run("free", "-m").splitlines()
    return {
        "lscpu": _lscpu(),
        "free_m": mem[:2],
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "git": _run("git", "rev-parse", "--short", "HEAD").strip(),
        "git_dirty": bool(_run("git", "status", "--porcelain", "--", "ingestor").strip()),
        "daemon": ingestor_cmd()[0],
        "tools": {
            "orjson": _version("orjson"),
            "anyio": _version("anyio"),
            "httpx": _version("httpx"),
            "sqlite": _sqlite_version(),
        },
    }


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "?"


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version
