"""The state directory deleted under a running daemon (ingestor.sinks.convex): input
pauses, what the old spool holds is still delivered (its files are open), then a new spool starts in
the same place; nothing accepted is lost and nothing is written where a restart cannot find it."""

from __future__ import annotations

import errno
import shutil
import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from ingestor.metrics import Health, Metrics
from ingestor.sinks.convex.factory import open_convex_sink
from ingestor.sinks.convex.spool import FILENAME
from tests.helpers.convex_fake import FakeConvex, fast_config, make_op
from tests.helpers.daemon import wait_until

pytestmark = pytest.mark.anyio


def _delete(path: Path) -> None:
    """`rm -rf` as an operator runs it: the daemon's threads may still create a file in the
    directory while it is being emptied (a new segment), so again until it is gone."""
    for _ in range(100):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.ENOTEMPTY:
                raise
            time.sleep(0.01)
    raise AssertionError(f"{path} could not be deleted")


async def test_deleted_while_delivering_every_op_arrives_and_the_new_spool_is_in_place(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    state = tmp_path / "state"
    fake = FakeConvex(status_forever=503)  # down: the old spool still holds ops when it is deleted
    async with open_convex_sink(fake.api(), fast_config(state), metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(3)])
        _delete(state)
        written = anyio.Event()

        async def write_after_deletion() -> None:
            await sink.write([make_op(n) for n in range(3, 5)])
            written.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(write_after_deletion)
            await wait_until(lambda: health.reasons == {"state_dir_missing"})
            assert not written.is_set(), "input waits while the old spool still holds ops"
            fake.status_forever = None  # Convex is back: the old spool drains, then input resumes
        assert health.reasons == set()
        assert (state / FILENAME).exists()
        await sink.write([make_op(5)])
    assert fake.order == [f"e:{n}" for n in range(6)]
    with sqlite3.connect(state / FILENAME) as conn:  # the new spool, where a restart looks
        assert conn.execute("SELECT count(*) FROM spool").fetchone()[0] == 0


async def test_deleted_while_idle_the_next_write_starts_a_new_spool(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    state = tmp_path / "state"
    fake = FakeConvex()
    async with open_convex_sink(fake.api(), fast_config(state), metrics=metrics, health=health) as sink:
        await sink.write([make_op(0)])
        await wait_until(lambda: fake.order == ["e:0"])
        _delete(state)
        await sink.write([make_op(1)])
        await wait_until(lambda: fake.order == ["e:0", "e:1"])
        assert (state / FILENAME).exists()
    assert fake.order == ["e:0", "e:1"]
