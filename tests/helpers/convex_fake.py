"""An in-process stand-in for `ingest:applyBatch` and `ingest:stageBlobPart` behind
httpx.MockTransport, for the sink's unit tests.

It applies ops by key (the exactly-once rule of docs/operations.md), stores staged parts by
(stageKey, field, part) and puts staged values back into the ops it applies, records every request,
and can be told to fail: scripted HTTP statuses or transport errors (for any call), ops whose
presence makes the whole batch fail deterministically, ops it answers `rejected` for, and a gate
that holds requests open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson

from ingestor.ops import Op
from ingestor.sinks.convex.client import ConvexHttp
from ingestor.sinks.convex.config import ConvexSinkConfig
from ingestor.sinks.convex.deployment import Secret


def make_op(n: int, *, size: int = 0, conversation: str = "c1") -> Op:
    return {
        "op": "appendEvent",
        "key": f"e:{n}",
        "args": {
            "conversationId": conversation,
            "method": "m",
            "payload": {"n": n, "pad": "x" * size},
            "receivedAt": n,
        },
    }


@dataclass
class FakeConvex:
    applied: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    requests: list[list[dict[str, Any]]] = field(default_factory=list)
    """The ops of each `ingest:applyBatch` call."""
    parts: dict[tuple[str, str, int], str] = field(default_factory=dict)
    stage_results: list[str] = field(default_factory=list)
    """`inserted` or `duplicate`, for each `ingest:stageBlobPart` call answered."""
    headers: list[httpx.Headers] = field(default_factory=list)
    script: list[int | Exception] = field(default_factory=list)
    """Answers for the next requests, in order: an HTTP status (error body) or an exception to raise."""
    status_forever: int | None = None
    batch_error_keys: set[str] = field(default_factory=set)
    """A batch containing any of these fails as a whole (HTTP 200 `status: "error"`)."""
    http400_keys: set[str] = field(default_factory=set)
    rejected_keys: set[str] = field(default_factory=set)
    gate: anyio.Event | None = None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        assert request.url.path == "/api/mutation"
        assert body["path"] in ("ingest:applyBatch", "ingest:stageBlobPart")
        assert body["format"] == "json"
        self.headers.append(request.headers)
        if body["path"] == "ingest:applyBatch":
            self.requests.append(body["args"]["ops"])
        if self.gate is not None:
            await self.gate.wait()
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return httpx.Response(answer, json={"code": "Scripted", "message": f"scripted {answer}"})
        if self.status_forever is not None:
            return httpx.Response(self.status_forever, json={"code": "Forever", "message": "nope"})
        if body["path"] == "ingest:stageBlobPart":
            return self._stage(body["args"])
        return self._apply(body["args"]["ops"])

    def _stage(self, args: dict[str, Any]) -> httpx.Response:
        part = (args["stageKey"], args["field"], args["part"])
        status = "duplicate" if part in self.parts else "inserted"
        self.parts[part] = args["data"]
        self.stage_results.append(status)
        return httpx.Response(200, json={"status": "success", "value": {"status": status}})

    def _unstage(self, op: dict[str, Any]) -> dict[str, Any] | None:
        """The op with its staged values put back, or None if a part is missing."""
        args = dict(op["args"])
        for ref in args.pop("staged", []):
            keys = [(ref["stageKey"], ref["field"], n) for n in range(ref["parts"])]
            if any(key not in self.parts for key in keys):
                return None
            text = "".join(self.parts[key] for key in keys)
            args[ref["field"]] = orjson.loads(text) if ref["json"] else text
        return {**op, "args": args}

    def _apply(self, ops: list[dict[str, Any]]) -> httpx.Response:
        unstaged = [self._unstage(op) for op in ops]
        if None in unstaged:
            message = 'Uncaught ConvexError: {"code":"StagedPartsMissing","message":"stage them"}'
            return httpx.Response(200, json={"status": "error", "errorMessage": message})
        keys = {op["key"] for op in ops}
        if keys & self.http400_keys:
            return httpx.Response(400, json={"code": "BadRequest", "message": "value too deep"})
        if keys & self.batch_error_keys:
            return httpx.Response(200, json={"status": "error", "errorMessage": "Uncaught Error: bad op"})
        results: list[dict[str, Any]] = []
        for op in unstaged:
            assert op is not None
            key = op["key"]
            if key in self.rejected_keys:
                results.append({"status": "rejected", "reason": "field too large"})
            elif key in self.applied:
                results.append({"status": "duplicate"})
            else:
                self.applied[key] = op
                self.order.append(key)
                results.append({"status": "inserted"})
        return httpx.Response(200, json={"status": "success", "value": results})

    def api(self, key: str | None = "test-admin-key|secret") -> ConvexHttp:
        return ConvexHttp(
            "http://convex.test",
            Secret(key) if key else None,
            transport=httpx.MockTransport(self.handle),
        )


def fast_config(state_dir: Path, **overrides: Any) -> ConvexSinkConfig:
    """Small batches and millisecond waits, so retry paths run quickly."""
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "batch_max_age": 0.01,
        "flush_timeout": 5.0,
        "retry_initial_wait": 0.001,
        "retry_max_wait": 0.01,
        "auth_retry_wait": 0.01,
    }
    values.update(overrides)
    return ConvexSinkConfig(**values)
