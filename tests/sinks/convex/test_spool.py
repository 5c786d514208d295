"""The durable FIFO: order, limits, totals, and persistence across reopen (and a killed process)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from ingestor.sinks.convex.spool import Spool
from ingestor.sinks.convex.spool_batch import Batch


def head(spool: Spool, max_ops: int, max_bytes: int) -> Batch:
    batch = spool.peek_batch(max_ops, max_bytes)
    assert batch is not None, "the spool is empty"
    return batch


def test_fifo_batches_respect_count_and_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 10], enqueued_at=1)
    assert [op[:1] for op in head(spool, max_ops=3, max_bytes=1000).ops()] == [b"a", b"b", b"c"]
    assert [len(op) for op in head(spool, max_ops=100, max_bytes=25).ops()] == [10, 10]
    assert len(head(spool, max_ops=100, max_bytes=1000).ops()) == 4
    spool.close()


def test_an_op_larger_than_max_bytes_still_forms_a_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([b"x" * 100, b"y"], enqueued_at=1)
    assert [len(op) for op in head(spool, max_ops=10, max_bytes=10).ops()] == [100]
    spool.close()


def test_delete_through_updates_totals_and_head(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([b"1", b"22"], enqueued_at=5)
    spool.append([b"333"], enqueued_at=9)
    assert (spool.ops, spool.total_bytes, spool.head_enqueued_at()) == (3, 6, 5)
    spool.delete_through(head(spool, 2, 100).last)
    assert (spool.ops, spool.total_bytes, spool.head_enqueued_at()) == (1, 3, 9)
    spool.delete_through(head(spool, 10, 100).last)
    assert (spool.ops, spool.total_bytes, spool.head_enqueued_at()) == (0, 0, None)
    assert spool.peek_batch(10, 100) is None
    spool.close()


def test_contents_and_totals_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "s.db"
    spool = Spool(path)
    spool.append([b"one", b"two"], enqueued_at=1)
    spool.delete_through(head(spool, 1, 100).first)
    spool.close()
    reopened = Spool(path)
    assert (reopened.ops, reopened.total_bytes) == (1, 3)
    assert head(reopened, 10, 100).ops() == [b"two"]
    reopened.append([b"three"], enqueued_at=2)
    assert head(reopened, 10, 100).ops() == [b"two", b"three"], "seq keeps growing"
    reopened.close()


def test_committed_appends_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from ingestor.sinks.convex.spool import Spool\n"
        f"s = Spool(Path({str(path)!r}))\n"
        "s.append([b'kept-%d' % i for i in range(100)], enqueued_at=1)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == -9
    spool = Spool(path)
    assert spool.ops == 100
    assert head(spool, 1, 100).ops() == [b"kept-0"]
    spool.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool(path)
    script = (
        f"from pathlib import Path; from ingestor.sinks.convex.spool import Spool; Spool(Path({str(path)!r}))"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert other.returncode != 0 and "in use by another ingestor" in other.stderr
    spool.close()
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr


def test_the_state_directory_and_every_spool_file_are_the_owners_only(tmp_path: Path) -> None:
    umask = os.umask(0)  # the most permissive: files would be world-readable
    try:
        spool = Spool(tmp_path / "state" / "s.db")
        spool.append([b"secret output " * 1000], enqueued_at=1)  # also a segment file, and the WAL
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    files = list((tmp_path / "state").iterdir())
    assert {"s.db", "s.db-wal", "s.db.lock"} <= {f.name for f in files}
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
    spool.close()
