"""A Convex HTTP API endpoint that accepts every batch without executing it.

`POST /api/mutation {"path", "args", "format"}` answers `{"status":"success","value":...}` at once
(or after `--delay-ms`): for `ingest:applyBatch` the value is one `{"status":"inserted"}` per op in
`args.ops`; for any other function it is `{"status":"inserted"}` (one op). `/api/query`, `/api/action`
and `/api/run/...` are answered the same way. Control endpoints for the harness:

- `GET /_bench/stats`: `{"requests", "ops", "bytes", "first_ns", "last_ns"}` (CLOCK_MONOTONIC when the
  first and the last request with ops arrived)
- `POST /_bench/reset`: zero the counters and forget the markers
- `GET /_bench/markers`: `[[seq, monotonic_ns], ...]`, for every `BENCHSEQ<8 digits>` seen in a request
  (with `--markers`), the time the request carrying it was fully received

A plain asyncio protocol (no framework): parsing JSON with orjson is the only per-request work.
Prints `listening <port>` on stdout once it accepts connections.

    python -m bench.blackhole --port 0 [--delay-ms 5] [--markers]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

_MARKER = re.compile(rb"BENCHSEQ(\d{8})")
_INSERTED = b'{"status":"inserted"}'


@dataclass
class State:
    delay_s: float
    markers_on: bool
    requests: int = 0
    ops: int = 0
    bytes: int = 0
    first_ns: int = 0
    last_ns: int = 0
    markers: list[tuple[int, int]] = field(default_factory=list)

    def reset(self) -> None:
        self.requests = self.ops = self.bytes = self.first_ns = self.last_ns = 0
        self.markers.clear()


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


def _count_ops(payload: Any) -> tuple[int, bool]:
    """(number of ops, whether it is a batch) for a mutation request body."""
    if isinstance(payload, dict):
        args = payload.get("args")
        if isinstance(args, dict) and isinstance(args.get("ops"), list):
            return len(args["ops"]), True
    return 1, False


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """(body, bytes consumed) of a complete chunked body starting at `pos`, or None if incomplete."""
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        start = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", eol)
            if buf[start : start + 2] == b"\r\n":
                return b"".join(parts), start + 2
            if trailer_end < 0:
                return None
            return b"".join(parts), trailer_end + 4
        if len(buf) < start + size + 2:
            return None
        parts.append(bytes(buf[start : start + size]))
        pos = start + size + 2


class Handler(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            method, target = lines[0].split(" ")[:2]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                parsed = _dechunk(self.buf, end + 4)
                if parsed is None:
                    return
                body, consumed = parsed
            else:
                length = int(headers.get("content-length", "0"))
                if len(self.buf) < end + 4 + length:
                    return
                body, consumed = bytes(self.buf[end + 4 : end + 4 + length]), end + 4 + length
            del self.buf[:consumed]
            keep_alive = headers.get("connection", "").lower() != "close"
            status, out = self._handle(method, target, body)
            if self.state.delay_s and target.startswith("/api/"):
                self.busy = True
                loop = asyncio.get_running_loop()
                loop.call_later(self.state.delay_s, self._send_later, status, out, keep_alive)
                return
            self._send(status, out, keep_alive)

    def _send(self, status: int, out: bytes, keep_alive: bool) -> None:
        assert self.transport is not None
        self.transport.write(_response(status, out, keep_alive))
        if not keep_alive:
            self.transport.close()

    def _send_later(self, status: int, out: bytes, keep_alive: bool) -> None:
        self.busy = False
        if self.transport is None or self.transport.is_closing():
            return
        self._send(status, out, keep_alive)
        self._process()

    def _handle(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        st = self.state
        if target.startswith("/api/"):
            now = time.monotonic_ns()
            try:
                payload = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                return 400, b'{"code":"BadJsonBody","message":"invalid JSON"}'
            n, batch = _count_ops(payload)
            st.requests += 1
            st.ops += n
            st.bytes += len(body)
            st.first_ns = st.first_ns or now
            st.last_ns = now
            if st.markers_on:
                st.markers.extend((int(m), now) for m in _MARKER.findall(body))
            value = b"[" + b",".join([_INSERTED] * n) + b"]" if batch else _INSERTED
            return 200, b'{"status":"success","value":' + value + b"}"
        if target == "/_bench/stats":
            stats = {
                "requests": st.requests,
                "ops": st.ops,
                "bytes": st.bytes,
                "first_ns": st.first_ns,
                "last_ns": st.last_ns,
            }
            return 200, orjson.dumps(stats)
        if target == "/_bench/reset" and method == "POST":
            st.reset()
            return 200, b"{}"
        if target == "/_bench/markers":
            return 200, orjson.dumps(st.markers)
        return 404, b'{"code":"NotFound","message":"no such route"}'

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, state: State) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Handler(state), host, port, backlog=512)
    sock_port = server.sockets[0].getsockname()[1]
    print(f"listening {sock_port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="added to every /api/ request")
    ap.add_argument("--markers", action="store_true", help="record BENCHSEQ markers (latency runs)")
    args = ap.parse_args(argv)
    state = State(delay_s=args.delay_ms / 1000, markers_on=args.markers)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
