"""Producer authentication (`--auth-token-file`): only a connection whose first line is the hello
line with the token reaches the pipeline; the token is never passed on; exposure checks at start."""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import orjson
import pytest
import structlog
from prometheus_client import CollectorRegistry

from ingestor.errors import SourceConfigError
from ingestor.logging import configure_logging
from ingestor.metrics import Metrics
from ingestor.pipeline import Pipeline
from ingestor.sources.auth import ProducerAuth, check_exposure, is_loopback, load_token
from ingestor.sources.sockets import TcpSource, UnixSource
from tests.helpers.pipeline_fakes import EchoNormalizer, MemorySink, texts

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "fixtures" / "codex-0.169.0" / "exec" / "failed_turn.jsonl"
STORED = len(set(FIXTURE.read_bytes().splitlines())) + 1
"""Raw events of the recording behind a hello line: its distinct lines (a line repeated in a thread
is one raw event) and the hello line."""
TOKEN = "producer-token-0123456789abcdef"


def hello(token: str | None = TOKEN, **fields: str) -> bytes:
    line: dict[str, str] = {"type": "ingestor.hello", **fields}
    if token is not None:
        line["token"] = token
    return json.dumps(line).encode() + b"\n"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


# --- the token file -------------------------------------------------------------------------------


def test_the_token_is_the_file_without_its_trailing_newline(token_file: Path) -> None:
    assert load_token(token_file) == TOKEN.encode()


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (TOKEN, 0o644, "readable by others"),
        (TOKEN, 0o604, "readable by others"),
        (f"{TOKEN}\nsecond", 0o600, "more than one line"),
        ("short-token\n", 0o600, "at least 16"),
        ("\n", 0o600, "empty"),
    ],
)
def test_unusable_token_files_are_refused(tmp_path: Path, content: str, mode: int, message: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(SourceConfigError, match=message) as raised:
        load_token(path)
    assert TOKEN not in str(raised.value)


def test_a_group_readable_token_file_is_refused_unless_the_group_is_the_daemons(token_file: Path) -> None:
    token_file.chmod(0o640)
    assert load_token(token_file) == TOKEN.encode()  # our own group (a Kubernetes fsGroup)
    if os.getuid() == 0:
        os.chown(token_file, -1, 65534)  # nogroup: not one of ours
        if 65534 not in {os.getgid(), *os.getgroups()}:
            with pytest.raises(SourceConfigError, match="readable by others"):
                load_token(token_file)


# --- exposure -------------------------------------------------------------------------------------


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("") and not is_loopback("0.0.0.0") and not is_loopback("::")


def test_tcp_off_loopback_needs_a_token_or_an_explicit_insecure_flag() -> None:
    with pytest.raises(SourceConfigError, match="--auth-token-file"):
        check_exposure(["127.0.0.1", ""], authenticated=False, insecure=False)
    check_exposure(["127.0.0.1", ""], authenticated=True, insecure=False)
    check_exposure(["0.0.0.0"], authenticated=False, insecure=True)
    check_exposure(["127.0.0.1", "localhost"], authenticated=False, insecure=False)


@pytest.mark.parametrize("address", [":0", "0.0.0.0:0"])
def test_run_refuses_an_exposed_unauthenticated_listener_at_start(address: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ingestor", "run", "--tcp", address, "--sink", f"sqlite:{tmp_path / 'db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--auth-token-file" in result.stderr and "--insecure-tcp" in result.stderr
    assert not (tmp_path / "db").exists()


# --- in the pipeline -------------------------------------------------------------------------------


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", stream=stream, json=True)
    yield stream
    structlog.reset_defaults()


async def _send(port: int, data: bytes) -> bytes:
    """Sends `data` on a new connection; returns what the daemon sent back before closing (nothing)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(data)
        received = b""
        with anyio.fail_after(5):
            try:
                while True:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return received


@pytest.mark.anyio
async def test_only_connections_that_open_with_the_token_are_stored(
    metrics: Metrics, log_output: io.StringIO
) -> None:
    recording = FIXTURE.read_bytes()
    sink = MemorySink()
    pipeline = Pipeline(sink, EchoNormalizer)  # type: ignore[arg-type]
    auth = ProducerAuth(TOKEN.encode(), hello_timeout=0.5, metrics=metrics)
    async with anyio.create_task_group() as tg:
        [address] = await tg.start(pipeline.run, [TcpSource("127.0.0.1:0", auth=auth)])
        port = int(address.rsplit(":", 1)[1])
        # Refused and closed: no hello, a wrong token, the token on the second line, silence.
        assert await _send(port, recording) == b""
        assert await _send(port, hello("wrong-token-0123456789") + recording) == b""
        assert await _send(port, recording.split(b"\n")[0] + b"\n" + hello() + recording) == b""
        assert await _send(port, b"") == b""
        async with await anyio.connect_tcp("127.0.0.1", port):
            await anyio.sleep(1)  # says nothing: closed after the hello timeout
        # Then a producer with the token in its first line, on another connection.
        async with await anyio.connect_tcp("127.0.0.1", port) as producer:
            await producer.send(hello(conversationId="mine") + recording)
        stored = await sink.wait_for(16)
        pipeline.stop()
    lines = [text for text in texts(stored) if text is not None]
    assert orjson.loads(lines[0]) == {"type": "ingestor.hello", "conversationId": "mine"}
    assert [line.encode() for line in lines[1:]] == recording.splitlines()
    assert all(TOKEN not in json.dumps(op) for op in sink.ops)
    # Only the admitted connection became a stream.
    assert {op["key"] for op in sink.ops if op["key"].startswith("end:")} == {f"end:tcp:{address}#5"}
    refused = {
        sample.labels["reason"]: sample.value
        for sample in metrics.producers_refused.collect()[0].samples
        if sample.name.endswith("_total")
    }
    assert refused == {"no hello line": 2.0, "first line is not a hello line": 2.0, "wrong token": 1.0}
    log = [json.loads(line) for line in log_output.getvalue().splitlines()]
    warnings = [event for event in log if event["event"].startswith("producer refused")]
    assert [event["peer"] for event in warnings] == ["127.0.0.1"], "logged once per peer"
    assert TOKEN not in log_output.getvalue()


# --- Unix sockets ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "expected"), [(0o600, 0o600), (0o660, 0o660)])
async def test_unix_socket_mode_whatever_the_umask(tmp_path: Path, mode: int, expected: int) -> None:
    path = tmp_path / "in.sock"
    pipeline = Pipeline(MemorySink(), EchoNormalizer)  # type: ignore[arg-type]
    umask = os.umask(0)  # the most permissive: the socket would be 0777
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run, [UnixSource(str(path), mode=mode)])
            assert path.stat().st_mode & 0o777 == expected
            pipeline.stop()
    finally:
        os.umask(umask)


@pytest.mark.anyio
async def test_a_live_socket_is_not_taken_over(tmp_path: Path) -> None:
    path = str(tmp_path / "in.sock")
    sink = MemorySink()
    first = Pipeline(sink, EchoNormalizer)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(first.run, [UnixSource(path)])
        with pytest.raises(SourceConfigError, match="another process is listening"):
            await UnixSource(path).serve(EchoNormalizer)  # type: ignore[arg-type]
        # The first daemon still has its socket and its producers.
        async with await anyio.connect_unix(path) as stream:
            await stream.send(b"still mine\n")
        assert texts(await sink.wait_for(1)) == ["still mine"]
        first.stop()


def test_a_second_daemon_on_a_live_socket_exits_2(tmp_path: Path) -> None:
    sock, db = tmp_path / "in.sock", tmp_path / "store.db"
    command = [sys.executable, "-m", "ingestor", "run", "--unix", str(sock), "--sink", f"sqlite:{db}"]
    first = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        second = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 2 and "another process is listening" in second.stderr
        with socket.socket(socket.AF_UNIX) as producer:
            producer.connect(str(sock))  # the first one still serves it
            producer.sendall(FIXTURE.read_bytes())
        deadline = time.monotonic() + 20
        while not _events(db):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        first.terminate()
        first.wait(timeout=20)


def _events(db: Path) -> list[str]:
    try:
        with sqlite3.connect(db) as conn:
            return [row[0] for row in conn.execute("SELECT method FROM events_raw")]
    except sqlite3.OperationalError:
        return []


def test_the_daemon_stores_an_authenticated_producer_and_never_the_token(
    token_file: Path, tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ingestor", "run", "--tcp", "127.0.0.1:0",
         "--auth-token-file", str(token_file), "--sink", f"sqlite:{db}"],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert daemon.stderr is not None
        for line in daemon.stderr:  # JSON log lines: stderr is not a terminal
            if '"listening"' in line:
                port = int(json.loads(line)["address"].rsplit(":", 1)[1])
                break
        recording = FIXTURE.read_bytes()
        with socket.create_connection(("127.0.0.1", port)) as intruder:
            intruder.sendall(recording)
            assert intruder.recv(1) == b""  # closed by the daemon
        with socket.create_connection(("127.0.0.1", port)) as producer:
            producer.sendall(hello(conversationId="chat-7", clientName="worker") + recording)
        deadline = time.monotonic() + 20
        while len(_events(db)) < STORED:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        daemon.terminate()
        _, stderr = daemon.communicate(timeout=20)
    assert daemon.returncode == 0
    assert _events(db)[0] == "ingestor.hello"
    assert len(_events(db)) == STORED, "one stream: the intruder's lines are not stored"
    assert TOKEN.encode() not in db.read_bytes()
    assert TOKEN not in stderr
