"""More producers than the daemon may open (ingestor.sources.accept): none of them ends it, and every
line of every producer is stored. The daemon runs with its open-files limit lowered."""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from ingestor.metrics import Metrics
from ingestor.pipeline import Pipeline, PipelineConfig
from ingestor.sources.accept import ConnectionLimit
from ingestor.sources.sockets import UnixSource
from tests.helpers.daemon import RECORDINGS, another_session
from tests.helpers.pipeline_fakes import EchoNormalizer, MemorySink, texts

RECORDING = (RECORDINGS / "exec" / "multi_turn.jsonl").read_bytes()
FD_LIMIT = 80


def event_count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM events_raw").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _lower_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))


@contextlib.contextmanager
def daemon(tmp_path: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """`ingestor run` on a Unix socket into SQLite, with at most `FD_LIMIT` open files."""
    sock, db = tmp_path / "in.sock", tmp_path / "store.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "ingestor", "run", "--unix", str(sock), "--sink", f"sqlite:{db}", *extra],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_lower_fd_limit,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield process, sock, db
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def connect_all(sock: Path, count: int) -> list[socket.socket]:
    producers = []
    for _ in range(count):
        producer = socket.socket(socket.AF_UNIX)
        producer.connect(str(sock))  # completes in the listen backlog even before the daemon accepts
        producers.append(producer)
    return producers


def wait_for_events(daemon: subprocess.Popen[bytes], db: Path, expected: int) -> None:
    deadline = time.monotonic() + 60
    while event_count(db) < expected:
        assert daemon.poll() is None, "the daemon died"
        assert time.monotonic() < deadline, f"{event_count(db)} of {expected} lines stored"
        time.sleep(0.1)


def stop(daemon: subprocess.Popen[bytes]) -> str:
    assert daemon.poll() is None, "the daemon died"
    daemon.send_signal(signal.SIGTERM)
    _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err.decode()[-3000:]
    return err.decode()


@pytest.mark.parametrize(
    "max_connections",
    [
        pytest.param(None, id="default cap under the fd limit"),
        # With every descriptor taken, other operations than accept fail too: the store's background
        # checkpoint once ended the daemon here (tests/sinks/sqlite/test_fd_limit.py).
        pytest.param("1000", id="cap above the fd limit: EMFILE on accept"),
    ],
)
def test_more_producers_than_file_descriptors(tmp_path: Path, max_connections: str | None) -> None:
    with daemon(tmp_path, *(["--max-connections", max_connections] if max_connections else [])) as running:
        _more_producers_than_file_descriptors(*running, emfile=max_connections is not None)


def _more_producers_than_file_descriptors(
    process: subprocess.Popen[bytes], sock: Path, db: Path, *, emfile: bool
) -> None:
    producers = connect_all(sock, 2 * FD_LIMIT)
    for index, producer in enumerate(producers):
        producer.sendall(another_session(RECORDING, index))
    time.sleep(1)  # the daemon accepts what it can; the rest wait in the backlog
    assert process.poll() is None
    for producer in producers:  # producers finish one by one, making room for those waiting
        producer.close()
    lines = len(set(RECORDING.splitlines()))  # a line repeated in a thread is one event
    wait_for_events(process, db, len(producers) * lines)

    # Still serving: a producer after the storm is stored too.
    [late] = connect_all(sock, 1)
    late.sendall(another_session(RECORDING, len(producers)))
    late.close()
    wait_for_events(process, db, (len(producers) + 1) * lines)
    log = stop(process)
    assert event_count(db) == (len(producers) + 1) * lines
    if emfile:
        assert log.count("accept failed") == 1  # once per incident, not once per failure
        assert "accepting again" in log
    else:
        assert "accept failed" not in log
        assert log.count("connection cap reached") >= 1


@pytest.mark.anyio
async def test_producers_beyond_the_cap_wait_unread_and_are_counted_open_once_accepted(
    tmp_path: Path, metrics: Metrics
) -> None:
    path = str(tmp_path / "in.sock")
    sink = MemorySink()
    pipeline = Pipeline(sink, EchoNormalizer, PipelineConfig())  # type: ignore[arg-type]
    open_connections = metrics.registry.get_sample_value
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run, [UnixSource(path, ConnectionLimit(2, metrics))])
        producers = []
        for index in range(3):
            producers.append(await anyio.connect_unix(path))
            await producers[-1].send(b"line %d\n" % index)
            await sink.wait_for(min(index + 1, 2))
        first, second, third = producers
        assert sorted(texts(sink.ops)) == ["line 0", "line 1"]  # the third waits in the backlog
        assert open_connections("ingestor_connections_open") == 2
        await first.aclose()
        await sink.wait_for(3)
        assert sorted(texts(sink.ops)) == ["line 0", "line 1", "line 2"]
        assert open_connections("ingestor_connections_open") == 2
        pipeline.stop()
    assert open_connections("ingestor_connections_open") == 0
    await second.aclose()
    await third.aclose()
