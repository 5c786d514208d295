"""Replay progress on a terminal: files, lines, bytes, rate and time left, redrawn in place (tqdm).

Drawn only when stderr is a terminal; elsewhere (a log file, CI) the replay's summary line says it
all. The bar reads counters the file source and the pipeline keep anyway (no per-line cost), a few
times a second.
"""

from __future__ import annotations

import sys
from typing import Final, TextIO

import anyio
from tqdm import tqdm

from ingestor.pipeline import PipelineStats
from ingestor.sources.files import ReplayProgress

REDRAW_SECONDS: Final = 0.25


async def show_progress(
    progress: ReplayProgress, stats: PipelineStats, out: TextIO = sys.stderr, every: float = REDRAW_SECONDS
) -> None:
    """Draw the bar until cancelled; then draw it once more, as it ended, and leave it on screen.
    Bytes are those on disk (a `.zst` file counts compressed): what the time left is reckoned from."""
    with tqdm(
        total=progress.bytes_total or None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="replay",
        file=out,
        dynamic_ncols=True,
        mininterval=every,
    ) as bar:

        def draw() -> None:
            bar.set_postfix_str(
                f"{progress.files_done:,}/{progress.files_total:,} files, {stats.lines:,} lines",
                refresh=False,
            )
            bar.update(progress.bytes_done - bar.n)

        try:
            while True:
                draw()
                await anyio.sleep(every)
        finally:
            draw()
