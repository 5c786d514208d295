"""The data path: live reading (no waiting for EOF), sockets with concurrent producers, batching,
ordering, backpressure, and flushing on stop."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from ingestor.batch import Batcher, BatchItem
from ingestor.ops import Op
from ingestor.pipeline import Pipeline, PipelineConfig
from ingestor.sources import Source
from ingestor.sources.files import FilesSource
from ingestor.sources.sockets import TcpSource, UnixSource
from ingestor.sources.stdin import StdinSource
from tests.helpers.pipeline_fakes import EchoNormalizer, MemorySink, texts

pytestmark = pytest.mark.anyio


def make_pipeline(sink: MemorySink, **config: float) -> Pipeline:
    return Pipeline(sink, EchoNormalizer, PipelineConfig(**config))  # type: ignore[arg-type]


async def start(pipeline: Pipeline, sources: list[Source], tg: anyio.abc.TaskGroup) -> list[str]:
    addresses: list[str] = await tg.start(pipeline.run, sources)
    return addresses


async def test_a_line_on_a_live_pipe_is_handled_before_eof() -> None:
    read_fd, write_fd = os.pipe()
    sink = MemorySink()
    pipeline = make_pipeline(sink)
    try:
        async with anyio.create_task_group() as tg:
            await start(pipeline, [StdinSource(read_fd)], tg)
            os.write(write_fd, b'{"first":1}\n{"partial":')
            # The writer keeps the pipe open: the op must arrive anyway, within the batch age.
            ops = await sink.wait_for(1, timeout=2)
            assert texts(ops) == ['{"first":1}']
            os.write(write_fd, b"2}\n")
            assert texts(await sink.wait_for(2, timeout=2)) == ['{"first":1}', '{"partial":2}']
            os.close(write_fd)
            write_fd = -1
        # End of input ends the stream (its finish() ops included) and the pipeline.
        assert [op["key"] for op in sink.ops][-1] == "end:stdin"
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


async def _produce(stream: anyio.abc.ByteStream, name: str, count: int) -> None:
    async with stream:
        for i in range(count):
            # Lines split across writes, and writes interleaved with the other producer.
            await stream.send(f"{name}-".encode())
            await anyio.sleep(0)
            await stream.send(f"{i}\n".encode())


async def _two_producers(connect: object, sink: MemorySink) -> None:
    async with anyio.create_task_group() as producers:
        for name in ("a", "b"):
            stream = await connect()  # type: ignore[operator]
            producers.start_soon(_produce, stream, name, 50)


def _check_streams(ops: list[Op]) -> None:
    by_source: dict[str, list[str]] = {}
    for op in ops:
        if op["args"]["method"] == "echo":
            by_source.setdefault(op["key"].rsplit(":", 1)[0], []).append(op["args"]["payload"]["text"])
    assert len(by_source) == 2
    # Each connection is its own stream, in order, whatever the interleaving between them.
    assert sorted(by_source.values()) == [[f"a-{i}" for i in range(50)], [f"b-{i}" for i in range(50)]]


async def test_unix_socket_takes_concurrent_producers(tmp_path: Path) -> None:
    path = str(tmp_path / "in.sock")
    sink = MemorySink()
    pipeline = make_pipeline(sink)
    async with anyio.create_task_group() as tg:
        await start(pipeline, [UnixSource(path)], tg)
        await _two_producers(lambda: anyio.connect_unix(path), sink)
        await sink.wait_for(100)
        pipeline.stop()
    _check_streams(sink.ops)
    assert {op["key"] for op in sink.ops if op["key"].startswith("end:")} == {
        f"end:unix:{path}#0",
        f"end:unix:{path}#1",
    }
    assert not os.path.exists(path)  # the socket file is removed on stop


async def test_tcp_takes_concurrent_producers() -> None:
    sink = MemorySink()
    pipeline = make_pipeline(sink)
    async with anyio.create_task_group() as tg:
        [address] = await start(pipeline, [TcpSource("127.0.0.1:0")], tg)
        port = int(address.rsplit(":", 1)[1])
        await _two_producers(lambda: anyio.connect_tcp("127.0.0.1", port), sink)
        await sink.wait_for(100)
        pipeline.stop()
    _check_streams(sink.ops)


async def test_stale_unix_socket_file_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "in.sock")
    listener = await anyio.create_unix_listener(path)
    await listener.aclose()  # anyio leaves the file behind, as a killed daemon would
    sink = MemorySink()
    pipeline = make_pipeline(sink)
    async with anyio.create_task_group() as tg:
        await start(pipeline, [UnixSource(path)], tg)
        async with await anyio.connect_unix(path) as stream:
            await stream.send(b"hello\n")
        await sink.wait_for(1)
        pipeline.stop()


async def test_stop_flushes_what_was_read_but_not_a_line_without_its_newline(tmp_path: Path) -> None:
    path = str(tmp_path / "in.sock")
    sink = MemorySink()
    pipeline = make_pipeline(sink, batch_max_age=60.0)
    async with anyio.create_task_group() as tg:
        await start(pipeline, [UnixSource(path)], tg)
        stream = await anyio.connect_unix(path)
        await stream.send(b"one\ntwo\nthr")
        # Complete lines are written once the reader is idle; the partial one is not a line yet.
        assert texts(await sink.wait_for(2, timeout=2)) == ["one", "two"]
        await anyio.sleep(0.1)
        pipeline.stop()
    await stream.aclose()
    # Stopped, the start of a line is left out: stored, it would be an invalid line forever (a
    # writer killed mid-line, a replay cut mid-file). At the end of a stream it is a line
    # (test_cli.py: test_run_on_stdin_stops_at_end_of_input).
    assert texts(sink.ops) == ["one", "two"]


async def test_slow_sink_applies_backpressure_and_nothing_is_lost() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    sink = MemorySink(delay=0.05)
    pipeline = make_pipeline(sink, batch_max_ops=10, queue_chunks=2)
    line = b"x" * 1000 + b"\n"
    written = 0
    try:
        async with anyio.create_task_group() as tg:
            await start(pipeline, [StdinSource(read_fd)], tg)
            # Write until the pipe is full: the daemon stopped reading because the sink is behind.
            with anyio.fail_after(10):
                while True:
                    try:
                        os.write(write_fd, line)
                    except BlockingIOError:
                        break
                    written += 1
                    if written % 64 == 0:
                        await anyio.sleep(0)
            assert written < 2000  # bounded: the pipe (64 KiB) plus a few queued reads
            assert len(texts(sink.ops)) < written
            os.close(write_fd)
            write_fd = -1
        assert len(texts(sink.ops)) == written
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def _ops(n: int, prefix: str = "k") -> list[Op]:
    return [{"op": "appendEvent", "key": f"{prefix}{i}", "args": {}} for i in range(n)]


async def _feed(items: list[BatchItem], batcher: Batcher, pause: float = 0.0) -> None:
    send, receive = anyio.create_memory_object_stream[BatchItem](10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run, receive)
        async with send:
            for item in items:
                await send.send(item)
                if pause:
                    await anyio.sleep(pause)


async def test_batcher_flushes_at_count_keeping_order() -> None:
    sink = MemorySink()
    await _feed([_ops(7), _ops(7, "m")], Batcher(sink, max_ops=5, max_age=60))  # type: ignore[arg-type]
    assert [len(b) for b in sink.batches] == [5, 5, 4]
    assert [op["key"] for op in sink.ops] == [op["key"] for op in _ops(7) + _ops(7, "m")]


async def test_batcher_flushes_at_age() -> None:
    sink = MemorySink()
    batcher = Batcher(sink, max_ops=1000, max_age=0.02)  # type: ignore[arg-type]
    send, receive = anyio.create_memory_object_stream[BatchItem](10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run, receive)
        async with send:
            await send.send(_ops(3))
            with anyio.fail_after(1):
                await sink.arrived.wait()
            assert [len(b) for b in sink.batches] == [3]
            await send.send(_ops(2))
    assert [len(b) for b in sink.batches] == [3, 2]


async def test_a_lone_line_reaches_the_sink_without_waiting_for_the_age() -> None:
    """Flush on idle: the batch age is a cap, not a delay; a line on a quiet pipe is written at once."""
    read_fd, write_fd = os.pipe()
    sink = MemorySink()
    pipeline = make_pipeline(sink, batch_max_age=60.0)
    try:
        async with anyio.create_task_group() as tg:
            await start(pipeline, [StdinSource(read_fd)], tg)
            began = anyio.current_time()
            os.write(write_fd, b"lone\n")
            assert texts(await sink.wait_for(1, timeout=5)) == ["lone"]
            assert anyio.current_time() - began < 1.0
            os.write(write_fd, b"next\n")
            assert texts(await sink.wait_for(2, timeout=5)) == ["lone", "next"]
            assert [len(b) for b in sink.batches] == [1, 1]
            os.close(write_fd)
            write_fd = -1
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


async def test_batcher_on_idle_still_batches_a_burst_and_keeps_order() -> None:
    sink = MemorySink()
    send, receive = anyio.create_memory_object_stream[BatchItem](10)
    for i in range(4):
        send.send_nowait(_ops(3, f"b{i}-"))  # buffered before the batcher looks: one burst
    send.close()
    await Batcher(sink, max_ops=1000, max_age=60).run(receive)  # type: ignore[arg-type]
    assert [len(b) for b in sink.batches] == [12]
    assert [op["key"] for op in sink.ops] == [op["key"] for i in range(4) for op in _ops(3, f"b{i}-")]


class BatchesSink(MemorySink):
    """A sink that takes several batches in one call (as the SQLite sink does, in one transaction)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[int]] = []

    async def write_batches(self, batches: list[list[Op]]) -> None:
        self.calls.append([len(b) for b in batches])
        for batch in batches:
            await self.write(batch)


async def test_batcher_hands_a_buffered_burst_to_write_batches_in_one_call() -> None:
    sink = BatchesSink()
    send, receive = anyio.create_memory_object_stream[BatchItem](10)
    for i in range(5):
        send.send_nowait(_ops(3, f"b{i}-"))
    send.close()
    await Batcher(sink, max_ops=4, max_age=60).run(receive)  # type: ignore[arg-type]
    # The first item alone is under max_ops; once over it, everything buffered joins one call of
    # full batches, and the rest (3 ops) is written at the end.
    assert sink.calls == [[4, 4, 4]]
    assert [len(b) for b in sink.batches] == [4, 4, 4, 3]
    assert [op["key"] for op in sink.ops] == [op["key"] for i in range(5) for op in _ops(3, f"b{i}-")]


async def test_batcher_without_flush_on_idle_waits_for_the_age() -> None:
    sink = MemorySink()
    batcher = Batcher(sink, max_ops=1000, max_age=0.2, flush_on_idle=False)  # type: ignore[arg-type]
    send, receive = anyio.create_memory_object_stream[BatchItem](10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run, receive)
        async with send:
            await send.send(_ops(1))
            await anyio.sleep(0.05)
            assert sink.batches == []
            with anyio.fail_after(2):
                await sink.arrived.wait()
            assert [len(b) for b in sink.batches] == [1]


async def test_a_replay_of_many_small_files_is_written_in_few_batches(tmp_path: Path) -> None:
    """A sessions archive: a file's end is not a batch cut (it cost one store transaction per file).
    While the sink writes, the following files queue up and go in the next write."""
    paths = []
    for i in range(40):
        path = tmp_path / f"f{i:02}.jsonl"
        path.write_bytes(b"".join(b"%d-%d\n" % (i, n) for n in range(5)))
        paths.append(str(path))
    sink = MemorySink(delay=0.2)  # a store's transaction takes a while (long enough on a busy machine)
    async with anyio.create_task_group() as tg:
        await start(make_pipeline(sink, batch_max_age=60.0, queue_chunks=128), [FilesSource(paths)], tg)
    assert texts(sink.ops) == [f"{i}-{n}" for i in range(40) for n in range(5)]
    assert len(sink.batches) <= 5


async def test_a_stream_that_ends_is_written_at_once_while_another_stays_open() -> None:
    """Its last lines wait for no stream end marker and no age: the idle flush writes them."""
    ending_read, ending_write = os.pipe()
    open_read, open_write = os.pipe()
    sink = MemorySink()
    pipeline = make_pipeline(sink, batch_max_age=60.0)
    try:
        async with anyio.create_task_group() as tg:
            await start(pipeline, [StdinSource(ending_read), StdinSource(open_read)], tg)
            os.write(ending_write, b"last")  # no newline: a line only at the end of its input
            os.close(ending_write)
            ending_write = -1
            ops = await sink.wait_for(1, timeout=2)
            assert texts(ops) == ["last"]
            os.close(open_write)
            open_write = -1
    finally:
        for fd in (ending_read, ending_write, open_read, open_write):
            if fd >= 0:
                os.close(fd)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_failing_normalizer_line_does_not_end_the_stream() -> None:
    class Flaky(EchoNormalizer):
        def feed_into(self, line, out):  # type: ignore[no-untyped-def]
            if line.data == b"bad":
                raise ValueError("bug")
            super().feed_into(line, out)

    sink = MemorySink()
    pipeline = Pipeline(sink, Flaky, PipelineConfig())  # type: ignore[arg-type]

    class Once:
        description = "test"

        async def serve(self, handle, *, task_status=anyio.TASK_STATUS_IGNORED):  # type: ignore[no-untyped-def]
            task_status.started("test")
            await handle("test", chunks(b"a\nbad\nb\n"))

    await pipeline.run([Once()])  # type: ignore[list-item]
    assert texts(sink.ops) == ["a", "b"]
    assert pipeline.stats.normalizer_errors == 1


async def test_a_sink_failure_ends_the_run_with_that_error() -> None:
    class BrokenSink(MemorySink):
        async def write(self, ops: object) -> None:
            raise OSError("disk full")

    read_fd, write_fd = os.pipe()
    pipeline = make_pipeline(BrokenSink())
    os.write(write_fd, b"a\n")  # the pipe stays open: only the failure can end the run
    try:
        with anyio.fail_after(5), pytest.raises(ExceptionGroup) as raised:
            await pipeline.run([StdinSource(read_fd)])
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert raised.group_contains(OSError, match="disk full")
    assert not raised.group_contains(anyio.BrokenResourceError)


async def test_replay_reads_a_pipe_path_as_it_arrives() -> None:
    """`ingestor replay <(codex exec --json ...)`: the path is a pipe, the writer still running."""
    read_fd, write_fd = os.pipe()
    sink = MemorySink()
    pipeline = make_pipeline(sink)
    try:
        async with anyio.create_task_group() as tg:
            await start(pipeline, [FilesSource([f"/dev/fd/{read_fd}"])], tg)
            os.write(write_fd, b"one\n")
            assert texts(await sink.wait_for(1, timeout=2)) == ["one"]
            os.write(write_fd, b"two")
            os.close(write_fd)
            write_fd = -1
        assert texts(sink.ops) == ["one", "two"]
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
