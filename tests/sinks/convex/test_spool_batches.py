"""The spool's batch rows and segment files: one row per appended group of ops, requests built from
rows as stored, partial confirmation (a bisected batch), restarts, and the earlier one-row-per-op
format."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import httpx
import orjson
import pytest

from ingestor.metrics import Health, Metrics
from ingestor.sinks.convex import spool as spool_module
from ingestor.sinks.convex.client import ConvexHttp
from ingestor.sinks.convex.factory import open_convex_sink
from ingestor.sinks.convex.spool import Spool
from ingestor.sinks.convex.spool_batch import SEP
from tests.helpers.convex_fake import FakeConvex, fast_config, make_op


def _spooled(spool: Spool) -> list[bytes]:
    """Every op in the spool, in order."""
    batch = spool.peek_batch(1_000_000, 1 << 40)
    return [] if batch is None else batch.ops()


def _ops(n: int, start: int = 0) -> list[bytes]:
    return [orjson.dumps({"n": i}) for i in range(start, start + n)]


def _rows(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as db:
        return [(seq, ops) for seq, ops in db.execute("SELECT seq, ops FROM spool ORDER BY seq")]


def _segments(state: Path) -> list[str]:
    return sorted(p.name for p in state.glob("*.seg"))


def test_an_append_is_one_row_per_request_sized_group(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool(path)
    spool.append(_ops(7), enqueued_at=1, max_ops=3)
    assert _rows(path) == [(1, 3), (4, 3), (7, 1)]
    batch = spool.peek_batch(max_ops=6, max_bytes=10_000)
    assert batch is not None and (batch.first, batch.last, batch.count) == (1, 6, 6)
    assert len(batch.parts) == 2, "whole rows, as stored"
    # The rows joined are the `ops` array of the request, as they are.
    assert orjson.loads(b"[" + batch.body() + b"]") == [{"n": i} for i in range(6)]
    assert batch.ops() == _ops(6)
    spool.close()


def test_an_oversized_op_gets_a_row_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool(path)
    big = orjson.dumps({"pad": "x" * 100})
    spool.append([*_ops(2), big, *_ops(2, 2)], enqueued_at=1, max_ops=10, max_bytes=50)
    assert _rows(path) == [(1, 2), (3, 1), (4, 2)]
    first = spool.peek_batch(10, 50)
    assert first is not None and first.count == 2
    spool.delete_through(first.last)
    alone = spool.peek_batch(10, 50)
    assert alone is not None and (alone.count, alone.size, alone.ops()) == (1, len(big), [big])
    spool.close()


def test_a_row_larger_than_the_request_is_sent_in_parts(tmp_path: Path) -> None:
    """Rows written with larger limits (an earlier run's settings) are cut, not sent too large."""
    spool = Spool(tmp_path / "s.db")
    spool.append(_ops(5), enqueued_at=1)
    batch = spool.peek_batch(max_ops=2, max_bytes=10_000)
    assert batch is not None and (batch.first, batch.count, batch.ops()) == (1, 2, _ops(2))
    spool.delete_through(batch.last)
    rest = spool.peek_batch(max_ops=10, max_bytes=10_000)
    assert rest is not None and (rest.first, rest.ops()) == (3, _ops(3, 2))
    spool.close()


def test_partial_confirmation_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "s.db"
    spool = Spool(path)
    spool.append(_ops(5), enqueued_at=7)
    spool.append(_ops(2, 5), enqueued_at=8)
    spool.delete_through(2)  # the first half of a bisected batch was applied
    assert (spool.ops, spool.total_bytes) == (5, sum(map(len, _ops(5, 2))))
    spool.close()

    reopened = Spool(path)
    assert (reopened.ops, reopened.total_bytes) == (5, sum(map(len, _ops(5, 2))))
    assert reopened.head_enqueued_at() == 7
    batch = reopened.peek_batch(100, 10_000)
    assert batch is not None and batch.first == 3
    assert batch.ops() == _ops(5, 2), "what was confirmed is not read again"
    assert batch.last == 7
    reopened.append(_ops(1, 7), enqueued_at=9)
    both = reopened.peek_batch(100, 10_000)
    assert both is not None and both.ops() == _ops(6, 2)
    reopened.close()


def test_segments_rotate_and_are_deleted_once_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 20)
    spool = Spool(tmp_path / "s.db")
    for n in range(4):
        spool.append(_ops(2, 2 * n), enqueued_at=n)  # 16 bytes each: a new segment every 2 appends
    assert len(_segments(tmp_path)) == 2
    spool.delete_through(4)
    assert len(_segments(tmp_path)) == 1, "the first segment has no rows left"
    spool.delete_through(8)
    assert spool.ops == 0
    spool.append(_ops(1, 8), enqueued_at=9)
    assert len(_segments(tmp_path)) == 1, "a full segment is dropped once a new one starts"
    assert _spooled(spool) == _ops(1, 8)
    spool.close()


def test_a_confirmation_without_fsync_survives_the_process_and_syncs_before_a_segment_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 20)
    synced: list[int] = []
    real_fsync = spool_module.os.fsync
    monkeypatch.setattr(spool_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    path = tmp_path / "s.db"
    spool = Spool(path)
    for n in range(3):
        spool.append(_ops(2, 2 * n), enqueued_at=n)  # segments: [0-3] then [4-5]
    synced.clear()
    spool.delete_through(2, durable=False)
    assert not synced, "no fsync for a confirmation that deletes no segment"
    spool.delete_through(4, durable=False)
    assert len(synced) == 1 and len(_segments(tmp_path)) == 1, "the WAL is synced, then the segment goes"
    # Another connection (a restarted daemon) sees what was committed.
    assert _rows(path) == [(5, 2)]
    spool.close()
    reopened = Spool(path)
    assert _spooled(reopened) == _ops(2, 4)
    reopened.close()


def test_peek_after_reads_past_a_batch_not_yet_confirmed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append(_ops(3), enqueued_at=1)
    spool.append(_ops(3, 3), enqueued_at=2)
    spool.append(_ops(1, 6), enqueued_at=3)
    after = spool.peek_batch(3, 10_000, after=3)
    assert after is not None and (after.first, after.ops()) == (4, _ops(3, 3))
    assert spool.peek_batch(3, 10_000, after=2) is None, "only from the start of a row"
    assert spool.peek_batch(3, 10_000, after=6, full=True) is None, "one op is not a full batch"
    rest = spool.peek_batch(3, 10_000, after=6)
    assert rest is not None and rest.ops() == _ops(1, 6)
    assert spool.ops == 7, "nothing was confirmed"
    spool.close()


def test_bytes_a_crash_left_without_a_row_are_never_read(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool(path)
    spool.append(_ops(2), enqueued_at=1)
    spool.close()
    [segment] = tmp_path.glob("*.seg")
    with segment.open("ab") as f:
        f.write(b"half-written data that no row refers to")  # killed before the rows were committed
    reopened = Spool(path)
    reopened.append(_ops(2, 2), enqueued_at=2)
    assert _spooled(reopened) == _ops(4)
    reopened.delete_through(4)
    assert _segments(tmp_path) == [f"s.db.{2:08d}.seg"], "the old segment went once confirmed"
    reopened.close()


def test_a_spool_of_the_one_row_per_op_format_is_converted_in_order(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, enqueued_at INTEGER NOT NULL,"
            " size INTEGER NOT NULL, body BLOB NOT NULL)"
        )
        db.executemany(
            "INSERT INTO spool (enqueued_at, size, body) VALUES (?, ?, ?)",
            [(1 + n // 3, len(body), body) for n, body in enumerate(_ops(7))],
        )
    spool = Spool(path)
    assert (spool.ops, spool.total_bytes) == (7, sum(map(len, _ops(7))))
    assert _spooled(spool) == _ops(7)
    assert spool.head_enqueued_at() == 1
    spool.close()
    with sqlite3.connect(path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "spool_v1" not in tables


def test_ops_must_be_compact_json(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    with pytest.raises(ValueError, match="compact JSON"):
        spool.append([b'{"a":\n1}', b"{}"], enqueued_at=1)
    assert spool.ops == 0
    spool.append([b"{}"], enqueued_at=1)
    assert spool.peek_batch(10, 100) is not None
    spool.close()
    assert SEP == b",\n"


# -- the sink -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_write_is_one_request_and_the_body_is_valid_json(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex()
    async with open_convex_sink(fake.api(), fast_config(tmp_path), metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(5)])
        await sink.write([make_op(n) for n in range(5, 8)])
    # The fake parses each body with orjson: both writes' rows arrived, in order, once.
    assert fake.order == [f"e:{n}" for n in range(8)]
    assert sum(len(r) for r in fake.requests) == 8


@pytest.mark.anyio
async def test_a_partially_confirmed_batch_is_not_sent_whole_again(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    """Bisecting confirms each settled half in the spool: a restart in the middle resumes after it."""
    down = FakeConvex(batch_error_keys={"e:5"})
    original = down.handle

    async def then_down(request: httpx.Request) -> httpx.Response:
        response = await original(request)
        if down.order:  # the first half applied: Convex goes away before the rest
            down.status_forever = 503
        return response

    api = ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(then_down))
    config = fast_config(tmp_path, batch_max_ops=8, flush_timeout=0.2)
    async with open_convex_sink(api, config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(8)])
    assert down.order == [f"e:{n}" for n in range(4)]
    assert _rows(tmp_path / "spool.sqlite3") == [(5, 4)], "ops 1-4 confirmed, 5-8 still spooled"

    up = FakeConvex(batch_error_keys={"e:5"})
    async with open_convex_sink(up.api(), config, metrics=metrics, health=health):
        pass
    sent = {op["key"] for request in up.requests for op in request}
    assert sent == {"e:4", "e:5", "e:6", "e:7"}, "the applied half is not sent again"
    assert up.order == ["e:4", "e:6", "e:7"]
    assert _rows(tmp_path / "spool.sqlite3") == []


@pytest.mark.anyio
async def test_a_full_batch_is_sent_without_waiting_for_its_age(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex()
    config = fast_config(tmp_path, batch_max_ops=4, batch_max_age=30.0)
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(4)])
        with anyio.fail_after(2):
            while not fake.order:
                await anyio.sleep(0.002)
    assert fake.order == [f"e:{n}" for n in range(4)]
