"""Producer authentication on the socket listeners (`--auth-token-file`).

With a token, the first line of every connection must be the hello line carrying it:
`{"type": "ingestor.hello", "token": "...", ...}`. A connection whose first line is anything else,
whose token is wrong, or that sends no complete first line within HELLO_TIMEOUT seconds (or
MAX_HELLO_BYTES), is closed, and none of its bytes reach the pipeline: nothing it sent is stored.

The hello line goes on to the normalizer without its `token` (the other fields re-encoded as JSON,
in their order), so the token is never stored in `events_raw`, nor anywhere else.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import socket
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import orjson

from ingestor.errors import SourceConfigError
from ingestor.logging import get_logger, redact
from ingestor.metrics import METRICS, Metrics
from ingestor.secret_files import SecretFileError, read_secret_file

HELLO_TYPE: Final = "ingestor.hello"
HELLO_TIMEOUT: Final = 10.0
MAX_HELLO_BYTES: Final = 64 * 1024
MIN_TOKEN_LENGTH: Final = 16
_MAX_PEERS_LOGGED: Final = 4096

log = get_logger("ingestor.sources")


def load_token(path: Path) -> bytes:
    """The token in `--auth-token-file`; SourceConfigError when the file cannot be used."""
    try:
        token = read_secret_file(path, "--auth-token-file", private=True)
    except SecretFileError as error:
        raise SourceConfigError(str(error)) from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise SourceConfigError(f"--auth-token-file: the token needs at least {MIN_TOKEN_LENGTH} characters")
    redact(token)  # should it ever reach a log line anyway
    return token.encode()


def is_loopback(host: str) -> bool:
    """Whether a listener on `host` is reachable from this machine only ("" is every interface)."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_exposure(tcp_hosts: Sequence[str], *, authenticated: bool, insecure: bool) -> None:
    """Refuses to listen for unauthenticated producers on an address other machines can reach."""
    if authenticated or insecure:
        return
    for host in tcp_hosts:
        if not is_loopback(host):
            where = host or "every interface"
            raise SourceConfigError(
                f"--tcp on {where} without --auth-token-file lets anyone who reaches it write history: "
                "add --auth-token-file FILE (or --insecure-tcp to accept that)"
            )


class ProducerAuth:
    """Checks the hello line of each connection against the token."""

    def __init__(self, token: bytes, *, hello_timeout: float = HELLO_TIMEOUT, metrics: Metrics = METRICS):
        self._token = token
        self._hello_timeout = hello_timeout
        self._metrics = metrics
        self._peers_logged: set[str] = set()

    async def admit(
        self, peer: str, chunks: AsyncGenerator[bytes, None]
    ) -> AsyncGenerator[bytes, None] | None:
        """The connection's bytes, the hello line without its token first; None if refused (then
        `chunks` is closed and nothing of it may be used)."""
        buffer = bytearray()
        with anyio.move_on_after(self._hello_timeout):
            async for chunk in chunks:
                buffer += chunk
                if b"\n" in buffer or len(buffer) > MAX_HELLO_BYTES:
                    break
        end = buffer.find(b"\n", 0, MAX_HELLO_BYTES)
        hello = self._check(bytes(buffer[:end])) if end >= 0 else "no hello line"
        if isinstance(hello, str):
            await chunks.aclose()
            self._refuse(peer, hello)
            return None
        first = orjson.dumps(hello) + b"\n" + bytes(buffer[end + 1 :])
        return _forward(first, chunks)

    def _check(self, line: bytes) -> dict[str, Any] | str:
        """The hello line's fields without the token, or why the line does not authenticate."""
        try:
            hello = orjson.loads(line)
        except orjson.JSONDecodeError:
            return "first line is not a hello line"
        if not isinstance(hello, dict) or hello.get("type") != HELLO_TYPE:
            return "first line is not a hello line"
        token = hello.pop("token", None)
        if not isinstance(token, str):
            return "no token"
        # Constant time: how long the comparison takes says nothing about how much of it matched.
        if not hmac.compare_digest(token.encode(), self._token):
            return "wrong token"
        return hello

    def _refuse(self, peer: str, reason: str) -> None:
        self._metrics.producers_refused.labels(reason=reason).inc()
        if peer in self._peers_logged:
            return
        if len(self._peers_logged) >= _MAX_PEERS_LOGGED:
            self._peers_logged.clear()  # bounded memory; a peer may then be logged once more
        self._peers_logged.add(peer)
        log.warning("producer refused: connection closed, nothing stored", peer=peer, reason=reason)


async def _forward(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    async with contextlib.aclosing(rest):
        yield first
        async for chunk in rest:
            yield chunk
