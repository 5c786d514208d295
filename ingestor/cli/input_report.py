"""The end of a run tells about input that is not Codex: how much, where, and the likely mistake.

Such input is stored as the contract says (every line a raw event; a file that is clearly no JSON
lines at all left out by replay), but nothing can be derived from it, so silence would leave a
newcomer with an empty history and no idea why. The usual mistakes: `codex exec` piped without
`--json` (it prints text), and `replay ~/.codex` instead of `~/.codex/sessions` (Codex's databases
and config files beside the session files).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ingestor.pipeline import NotCodexStream, PipelineStats
from ingestor.sources.files import SkippedFile

SESSIONS: Final = "sessions"
"""Codex keeps its session files in `$CODEX_HOME/sessions` (`~/.codex/sessions`)."""
SHOWN: Final = 3

EXEC_HINT: Final = 'hint: `codex exec` prints JSON only with --json: codex exec --json "..." | ingestor run'
READS_HINT: Final = (
    "hint: the ingestor reads `codex exec --json`, `codex app-server` and Codex's session files "
    "(~/.codex/sessions); anything else is only kept raw"
)


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else many or one + 's'}"


def _codex_home(path: Path) -> Path | None:
    """The Codex home directory `path` is in, when it is not in that home's sessions: the nearest
    ancestor with a `sessions` directory."""
    for parent in path.absolute().parents:
        if parent.name == SESSIONS:
            return None
        if (parent / SESSIONS).is_dir():
            return parent
    return None


def _describe(stream: NotCodexStream) -> str:
    source = stream.source.removeprefix("file:")
    return f"{source} ({stream.not_json + stream.unknown:,} of {_plural(stream.lines, 'line')})"


def report(
    stats: PipelineStats,
    streams: int,
    examples: Sequence[NotCodexStream],
    skipped: Sequence[SkippedFile] = (),
) -> list[str]:
    """The lines to print on stderr (each `ingestor: ...`); none when everything was Codex JSON."""
    lines: list[str] = []
    paths: list[Path] = []
    if skipped:
        kinds = Counter(file.what for file in skipped)
        what = ", ".join(_plural(count, kind) for kind, count in kinds.items())
        names = ", ".join(file.path for file in skipped[:SHOWN]) + (", ..." if len(skipped) > SHOWN else "")
        lines.append(f"skipped {_plural(len(skipped), 'file')} that are not JSON lines ({what}): {names}")
        paths.extend(Path(file.path) for file in skipped)
    bad = stats.not_json_lines + stats.unknown_lines
    if bad:
        kinds_of_lines = ", ".join(
            text
            for count, text in (
                (stats.not_json_lines, f"{stats.not_json_lines:,} not JSON"),
                (stats.unknown_lines, f"{stats.unknown_lines:,} JSON of no Codex stream kind"),
            )
            if count
        )
        where = ", ".join(_describe(stream) for stream in examples[:SHOWN])
        more = f" and {streams - SHOWN:,} more" if streams > SHOWN else ""
        verb = "is" if bad == 1 else "are"
        lines.append(
            f"{_plural(bad, 'input line')} {verb} not Codex JSON ({kinds_of_lines}), in "
            f"{_plural(streams, 'stream')}: {where}{more}; stored raw as events, nothing derived from them"
        )
        paths.extend(Path(s.source.removeprefix("file:")) for s in examples if s.source.startswith("file:"))
    if not lines:
        return []
    homes = {home for home in map(_codex_home, paths) if home is not None}
    if homes:
        lines.extend(
            f"hint: {home} looks like a Codex home: its session files are in {home / SESSIONS} "
            f"(ingestor replay {home / SESSIONS})"
            for home in sorted(homes)
        )
    elif any(s.source == "stdin" and s.not_json for s in examples):
        lines.append(EXEC_HINT)
    else:
        lines.append(READS_HINT)
    return [f"ingestor: {line}" for line in lines]
