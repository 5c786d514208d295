"""Workload profiles: how big the pieces of a generated Codex session are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str
    threads: int
    """How many conversations run interleaved."""
    legacy_threads: int
    """How many of them also emit the legacy `codex/event/*` duplicates (Codex 0.63 style)."""
    output_delta_median: int
    """Median size in bytes of one `item/commandExecution/outputDelta` (log-normal)."""
    output_delta_sigma: float
    output_delta_max: int
    output_deltas_max: int
    """Deltas per command: 1..this (uniform), except long commands."""
    long_command_prob: float
    """Probability that a command is long-running: 20..60 deltas, hundreds of KiB in total."""
    aggregated_cap: int
    """`aggregatedOutput` keeps at most this many bytes (the tail)."""
    agent_deltas: tuple[int, int]
    reasoning_deltas: tuple[int, int]
    commands_per_turn: tuple[int, int]


CODEX: Final = Profile(
    name="codex",
    description="realistic Codex session mix (app-server v2 + legacy codex/event/* duplicates)",
    threads=4,
    legacy_threads=1,
    output_delta_median=300,
    output_delta_sigma=1.2,
    output_delta_max=8192,
    output_deltas_max=24,
    long_command_prob=0.01,
    aggregated_cap=256 * 1024,
    agent_deltas=(10, 80),
    reasoning_deltas=(5, 30),
    commands_per_turn=(1, 8),
)

SMALL: Final = Profile(
    name="small",
    description="small events: token-sized deltas, short command output (median line < 1 KiB)",
    threads=4,
    legacy_threads=1,
    output_delta_median=120,
    output_delta_sigma=0.6,
    output_delta_max=400,
    output_deltas_max=6,
    long_command_prob=0.0,
    aggregated_cap=1024,
    agent_deltas=(10, 80),
    reasoning_deltas=(5, 30),
    commands_per_turn=(1, 6),
)

MIX: Final = Profile(
    name="mix",
    description="tiny notifications + 8 KiB output deltas + occasional outputs of hundreds of KiB",
    threads=4,
    legacy_threads=1,
    output_delta_median=8192,
    output_delta_sigma=0.0,
    output_delta_max=8192,
    output_deltas_max=4,
    long_command_prob=0.05,
    aggregated_cap=1024 * 1024,
    agent_deltas=(10, 60),
    reasoning_deltas=(5, 20),
    commands_per_turn=(1, 6),
)

PROFILES: Final = {p.name: p for p in (CODEX, SMALL, MIX)}
