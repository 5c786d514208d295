"""The daemon's command lines used by the suite (one place to follow CLI changes)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from bench.procs import ingestor_cmd

DRAIN_TIMEOUT_S = 900
"""`--flush-timeout` for runs that must end with everything delivered (the default gives up at 10 s)."""


@functools.cache
def help_of(command: str) -> str:
    """`ingestor COMMAND --help` (empty when this build has no such command)."""
    return subprocess.run(ingestor_cmd(command, "--help"), capture_output=True, text=True, check=False).stdout


def _supported(command: str, flag: str) -> bool:
    return flag in help_of(command)


def replay(path: Path, sink: str, *extra: str) -> list[str]:
    """`ingestor replay FILE --sink SINK`: read FILE to the end, exit once the sink has it all."""
    return ingestor_cmd("replay", str(path), "--sink", sink, *extra)


def _convex_flags(command: str, state_dir: Path, drain: bool) -> list[str]:
    flags = ["--state-dir", str(state_dir)] if _supported(command, "--state-dir") else []
    if drain and _supported(command, "--flush-timeout"):
        flags += ["--flush-timeout", str(DRAIN_TIMEOUT_S)]
    return flags


def replay_convex(path: Path, state_dir: Path, *extra: str) -> list[str]:
    """Replay into Convex and wait until every op is confirmed (or the drain timeout)."""
    return replay(path, "convex", *_convex_flags("replay", state_dir, drain=True), *extra)


def run_convex_stdin(state_dir: Path, *extra: str, spool_max: str | None = None) -> list[str]:
    """`ingestor run --stdin --sink convex`: the live-pipe daemon."""
    flags = _convex_flags("run", state_dir, drain=True)
    if spool_max and _supported("run", "--spool-max-bytes"):
        flags += ["--spool-max-bytes", spool_max]
    return ingestor_cmd("run", "--stdin", "--sink", "convex", *flags, *extra)
