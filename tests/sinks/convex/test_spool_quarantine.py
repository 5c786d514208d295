"""A spool damaged on disk (a truncated or missing segment, an unreadable index) never stops the
daemon from starting: what cannot be read is moved aside, logged and counted; the rest is delivered
(ingestor.sinks.convex)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestor.metrics import Health, Metrics
from ingestor.sinks.convex.factory import open_convex_sink
from ingestor.sinks.convex.spool import FILENAME
from ingestor.sinks.convex.spool_recovery import QUARANTINE_DIR
from tests.helpers.convex_fake import FakeConvex, fast_config, make_op

pytestmark = pytest.mark.anyio


async def spool_while_down(state: Path, metrics: Metrics, health: Health, *batches: range) -> None:
    """Each batch its own spool row (one write each), none delivered."""
    down = FakeConvex(status_forever=503)
    async with open_convex_sink(
        down.api(), fast_config(state, flush_timeout=0.05), metrics=metrics, health=health
    ) as sink:
        for batch in batches:
            await sink.write([make_op(n, size=200) for n in batch])


def segments(state: Path) -> list[Path]:
    return sorted(state.glob(f"{FILENAME}.*.seg"))


def quarantined(metrics: Metrics, what: str) -> float:
    return metrics.registry.get_sample_value("ingestor_spool_quarantined_total", {"what": what}) or 0.0


async def test_a_truncated_segment_is_quarantined_and_the_rest_delivered(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    await spool_while_down(tmp_path, metrics, health, range(0, 3), range(3, 6), range(6, 9))
    [segment] = segments(tmp_path)
    size = segment.stat().st_size
    os.truncate(segment, size - 300)  # the last row loses its end, as disk trouble would leave it

    up = FakeConvex()
    async with open_convex_sink(up.api(), fast_config(tmp_path), metrics=metrics, health=health):
        pass
    assert up.order == [f"e:{n}" for n in range(6)]
    assert quarantined(metrics, "ops") == 3
    [moved] = (tmp_path / QUARANTINE_DIR).iterdir()
    assert sorted(path.name for path in moved.iterdir()) == sorted([segment.name, "rows.json"])
    assert (moved / segment.name).stat().st_size == size - 300


async def test_a_missing_segment_is_quarantined_and_new_input_still_delivered(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    await spool_while_down(tmp_path, metrics, health, range(0, 2))
    for segment in segments(tmp_path):
        segment.unlink()

    up = FakeConvex()
    async with open_convex_sink(up.api(), fast_config(tmp_path), metrics=metrics, health=health) as sink:
        await sink.write([make_op(7)])
    assert up.order == ["e:7"]
    assert quarantined(metrics, "ops") == 2


async def test_an_unreadable_index_is_moved_aside_with_its_segments(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    await spool_while_down(tmp_path, metrics, health, range(0, 2))
    old_segments = [path.name for path in segments(tmp_path)]
    index = tmp_path / FILENAME
    index.write_bytes(b"not a database" + bytes(4096))
    (tmp_path / (FILENAME + "-wal")).unlink(missing_ok=True)

    up = FakeConvex()
    async with open_convex_sink(up.api(), fast_config(tmp_path), metrics=metrics, health=health) as sink:
        await sink.write([make_op(7)])
    assert up.order == ["e:7"]
    assert quarantined(metrics, "index") == 1
    [moved] = (tmp_path / QUARANTINE_DIR).iterdir()
    assert {FILENAME, *old_segments} <= {path.name for path in moved.iterdir()}
