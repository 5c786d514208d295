"""The record of one measurement: per-run series, their summaries, the command that was run."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import ROOT
from bench.stats import Summary, summarize


@dataclass
class Measurement:
    id: str
    """What was measured, e.g. `replay-null`."""
    workload: str
    command: str
    series: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.series.setdefault(key, []).append(float(value))

    def summary(self, key: str) -> Summary | None:
        values = self.series.get(key)
        return summarize(values) if values else None

    def median(self, key: str) -> float | None:
        s = self.summary(key)
        return s["median"] if s else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workload": self.workload,
            "command": self.command,
            "series": self.series,
            "summary": {k: summarize(v) for k, v in self.series.items() if v},
            "info": self.info,
            "error": self.error,
        }


def show_cmd(cmd: Sequence[str]) -> str:
    """A command line as it would be typed from the repository root (paths made relative)."""
    root = str(ROOT) + "/"
    parts = [str(p).replace(root, "") for p in cmd]
    parts = [p.replace(str(Path.home()), "~") for p in parts]
    # Placeholders such as $TMP stand for a per-run value: show them as a shell would expand them.
    return re.sub(r"'(\$[A-Z_]+[^'\s]*)'", r"\1", shlex.join(parts))
