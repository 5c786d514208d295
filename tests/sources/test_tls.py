"""TLS on the TCP listeners: encrypted producers are stored, plain-text ones are not, and with a
client CA only producers holding a certificate it issued get through."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import trustme
from anyio.streams.tls import TLSStream

from ingestor.errors import SourceConfigError
from ingestor.pipeline import Pipeline
from ingestor.sources.sockets import TcpSource
from ingestor.sources.tls import server_context
from tests.helpers.pipeline_fakes import EchoNormalizer, MemorySink, texts

pytestmark = pytest.mark.anyio

RECORDING = Path(__file__).resolve().parents[2] / "fixtures" / "codex-0.169.0" / "exec" / "failed_turn.jsonl"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _server(ca: trustme.CA, tmp_path: Path, *, mutual: bool) -> ssl.SSLContext:
    cert = ca.issue_cert("127.0.0.1")
    chain, key, client_ca = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(client_ca))
    return server_context(chain, key, client_ca if mutual else None)


def _client(ca: trustme.CA, *, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if with_certificate:
        ca.issue_cert("producer-1").configure_cert(context)
    return context


async def _send_tls(port: int, context: ssl.SSLContext, data: bytes) -> bool:
    """Whether the connection was accepted and the data sent."""
    try:
        tcp = await anyio.connect_tcp("127.0.0.1", port)
        async with await TLSStream.wrap(
            tcp, ssl_context=context, hostname="127.0.0.1", standard_compatible=False
        ) as stream:
            await stream.send(data)
            # TLS 1.3 reports a refused client certificate only on the first read.
            with anyio.move_on_after(0.5):
                await stream.receive()
    except (ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream, ConnectionError):
        return False
    return True


async def _serve(context: ssl.SSLContext, produce: object) -> list[str]:
    sink = MemorySink()
    pipeline = Pipeline(sink, EchoNormalizer)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        [address] = await tg.start(pipeline.run, [TcpSource("127.0.0.1:0", tls=context)])
        await produce(int(address.rsplit(":", 1)[1]))  # type: ignore[operator]
        await anyio.sleep(0.3)
        pipeline.stop()
    return [text for text in texts(sink.ops) if text is not None]


async def test_tls_producers_are_stored_plain_text_ones_are_not(ca: trustme.CA, tmp_path: Path) -> None:
    recording = RECORDING.read_bytes()

    async def produce(port: int) -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as plain:
            await plain.send(b'{"type":"plain.text"}\n')
        assert await _send_tls(port, _client(ca, with_certificate=False), recording)

    stored = await _serve(_server(ca, tmp_path, mutual=False), produce)
    assert [line.encode() for line in stored] == recording.splitlines()


async def test_with_a_client_ca_only_certified_producers_get_through(ca: trustme.CA, tmp_path: Path) -> None:
    async def produce(port: int) -> None:
        assert not await _send_tls(port, _client(ca, with_certificate=False), b'{"type":"anonymous"}\n')
        assert await _send_tls(port, _client(ca, with_certificate=True), b'{"type":"certified"}\n')

    assert await _serve(_server(ca, tmp_path, mutual=True), produce) == ['{"type":"certified"}']


def test_unusable_tls_files_are_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(SourceConfigError, match="--tls-cert"):
        server_context(tmp_path / "cert.pem", tmp_path / "cert.pem")


def _run(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "ingestor", "run", *args, "--sink", "null"]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_tls_key_without_a_certificate_exits_2(tmp_path: Path) -> None:
    daemon = _run("--tcp", "127.0.0.1:0", "--tls-key", str(tmp_path / "key.pem"))
    _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 2 and "--tls-cert and --tls-key go together" in stderr


def test_mutual_tls_counts_as_authentication_off_loopback(ca: trustme.CA, tmp_path: Path) -> None:
    _server(ca, tmp_path, mutual=True)  # writes the PEM files
    pem = {name: str(tmp_path / f"{name}.pem") for name in ("chain", "key", "ca")}
    daemon = _run(
        "--tcp",
        "0.0.0.0:0",
        "--tls-cert",
        pem["chain"],
        "--tls-key",
        pem["key"],
        "--tls-client-ca",
        pem["ca"],
    )
    try:
        assert daemon.stderr is not None
        for line in daemon.stderr:
            if '"listening"' in line:
                assert json.loads(line)["tls"] is True
                break
        else:
            raise AssertionError("the daemon exited instead of listening")
    finally:
        daemon.terminate()
        daemon.communicate(timeout=20)
    assert daemon.returncode == 0
