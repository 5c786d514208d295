"""Ops too large for one `ingest:applyBatch` call: staged part by part, then applied by reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ingestor.metrics import Health, Metrics
from ingestor.ops import Op
from ingestor.sinks.convex.client import ConvexHttp
from ingestor.sinks.convex.factory import open_convex_sink
from ingestor.sinks.convex.staging import STAGE_PART_BYTES, _utf8_parts
from tests.helpers.convex_fake import FakeConvex, fast_config, make_op
from tests.sinks.convex.test_sink import dead_letters, sample

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
BUDGET = MIB  # the batch byte budget in these tests: larger ops are staged


def big_command(output: str) -> Op:
    return {
        "op": "upsertCommand",
        "key": "x:1",
        "args": {
            "callId": "call",
            "turnId": "t1",
            "startedAt": 1,
            "stdout": output,
            "aggregatedOutput": output + "!",
            "parsedCmd": {"type": "unknown", "cmd": "cat"},
            "exitCode": 0,
        },
    }


def applied(fake: FakeConvex, op: Op) -> dict[str, Any]:
    return fake.applied[op["key"]]


def as_sent(op: Op) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(orjson.dumps(op))
    return result


async def test_a_large_op_is_staged_then_applied_in_order(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex()
    big = make_op(2, size=2 * BUDGET)
    config = fast_config(tmp_path, batch_max_bytes=BUDGET)
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(1), big, make_op(3)])
    assert fake.order == ["e:1", "e:2", "e:3"]
    assert applied(fake, big) == as_sent(big), "the value put back together is the op as written"
    [staged_apply] = [ops for ops in fake.requests if ops[0]["key"] == "e:2"]
    [ref] = staged_apply[0]["args"]["staged"]
    assert ref["field"] == "payload" and ref["json"] is True and "payload" not in staged_apply[0]["args"]
    assert ref["parts"] == len(fake.parts) == 5
    assert fake.stage_results == ["inserted"] * 5
    assert len(orjson.dumps(staged_apply)) < 1000, "the op itself carries only the reference"
    assert dead_letters(tmp_path) == []
    assert sample(metrics, "ingestor_spool_ops") == 0


async def test_string_columns_split_on_character_boundaries(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex()
    op = big_command("é😀x\n" * 200_000)  # 1, 2 and 4 UTF-8 bytes: parts cannot end on a boundary by luck
    async with open_convex_sink(
        fake.api(), fast_config(tmp_path, batch_max_bytes=BUDGET), metrics=metrics, health=health
    ) as sink:
        await sink.write([op])
    assert applied(fake, op) == as_sent(op)
    staged = {field for _, field, _ in fake.parts}
    assert staged == {"stdout", "aggregatedOutput"}, "small columns stay inline"
    assert all(len(data.encode()) <= STAGE_PART_BYTES for data in fake.parts.values())


def test_utf8_parts_respect_the_budget_and_cover_the_text() -> None:
    text = ("a€😀" * 1000).encode()
    bounds = _utf8_parts(text, 10)
    assert b"".join(text[start:end] for start, end in bounds) == text
    assert all(0 < end - start <= 10 for start, end in bounds)
    for start, end in bounds:
        text[start:end].decode()  # each part is valid UTF-8 on its own
    assert _utf8_parts(b"", 10) == []


async def test_staging_retries_failures_and_lost_responses(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex(script=[503, httpx.ConnectError("refused")])
    original = fake.handle
    lost = [False, True]  # the second staging call commits, then its response is lost

    async def commit_then_drop(request: httpx.Request) -> httpx.Response:
        response = await original(request)
        if b"stageBlobPart" in request.content and lost and lost.pop(0):
            raise httpx.ReadError("connection reset after commit")
        return response

    api = ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(commit_then_drop))
    op = make_op(1, size=2 * BUDGET)
    async with open_convex_sink(
        api, fast_config(tmp_path, batch_max_bytes=BUDGET), metrics=metrics, health=health
    ) as sink:
        await sink.write([op])
    assert applied(fake, op) == as_sent(op)
    assert fake.stage_results.count("duplicate") == 1, "the part whose answer was lost, sent again"
    assert len(fake.parts) == 5
    assert dead_letters(tmp_path) == []


async def test_a_restart_mid_staging_resumes_with_the_parts_already_there(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex()
    original = fake.handle
    down = [False]

    async def fails_after_two_parts(request: httpx.Request) -> httpx.Response:
        if down[0]:
            return httpx.Response(503, json={"code": "Down", "message": "down"})
        response = await original(request)
        down[0] = len(fake.parts) == 2
        return response

    op = make_op(1, size=2 * BUDGET)
    config = fast_config(tmp_path, batch_max_bytes=BUDGET, flush_timeout=0.2)
    api = ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(fails_after_two_parts))
    async with open_convex_sink(api, config, metrics=metrics, health=health) as sink:
        await sink.write([op])
    assert fake.order == [] and len(fake.parts) == 2
    assert sample(metrics, "ingestor_spool_ops") == 1, "the op stays spooled until it is applied"

    down[0] = False
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health):
        pass  # the spool is delivered on start
    assert fake.order == ["e:1"]
    assert applied(fake, op) == as_sent(op)
    assert fake.stage_results == ["inserted"] * 2 + ["duplicate"] * 2 + ["inserted"] * 3


async def test_parts_missing_at_apply_time_are_staged_again(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex()
    original = fake.handle
    dropped = [False]

    async def drops_a_part_once(request: httpx.Request) -> httpx.Response:
        if b'"staged"' in request.content and not dropped[0]:
            dropped[0] = True
            del fake.parts[next(iter(fake.parts))]  # as if `ingest:dropStage` had got to it first
        return await original(request)

    api = ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(drops_a_part_once))
    op = make_op(1, size=2 * BUDGET)
    config = fast_config(tmp_path, batch_max_bytes=BUDGET, retry_max_wait=0.01)
    async with open_convex_sink(api, config, metrics=metrics, health=health) as sink:
        await sink.write([op])
    assert applied(fake, op) == as_sent(op)
    assert fake.stage_results.count("inserted") == 6 and fake.stage_results.count("duplicate") == 4
    assert sample(metrics, "ingestor_delivery_retries_total", cause="staged_parts_missing") == 1
    assert dead_letters(tmp_path) == []


@pytest.mark.parametrize("refused", ["part", "op"])
async def test_a_refused_staged_op_is_dead_lettered_whole(
    tmp_path: Path, metrics: Metrics, health: Health, refused: str
) -> None:
    fake = FakeConvex(rejected_keys={"e:2"})
    original = fake.handle

    async def refuse_parts(request: httpx.Request) -> httpx.Response:
        if refused == "part" and b"stageBlobPart" in request.content:
            message = 'Uncaught ConvexError: {"code":"BadStagePart"}'
            return httpx.Response(200, json={"status": "error", "errorMessage": message})
        return await original(request)

    api = ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(refuse_parts))
    big = make_op(2, size=2 * BUDGET)
    async with open_convex_sink(
        api, fast_config(tmp_path, batch_max_bytes=BUDGET), metrics=metrics, health=health
    ) as sink:
        await sink.write([make_op(1), big, make_op(3)])
    assert fake.order == ["e:1", "e:3"]
    [letter] = dead_letters(tmp_path)
    assert letter["op"] == as_sent(big), "the dead letter holds the op as written, not the reference"
    assert ("BadStagePart" if refused == "part" else "field too large") in str(letter["reason"])


async def test_an_op_convex_finds_too_large_is_staged_too(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex()
    original = fake.handle

    async def refuses_large_batches(request: httpx.Request) -> httpx.Response:
        # Convex's size of a value can exceed its JSON size (every number weighs 9 bytes).
        if b"applyBatch" in request.content and len(request.content) > 300_000:
            message = 'Uncaught ConvexError: {"code":"BatchTooLarge","limit":"MAX_BATCH_BYTES"}'
            return httpx.Response(200, json={"status": "error", "errorMessage": message})
        return await original(request)

    api = ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(refuses_large_batches))
    ops = [make_op(1), make_op(2, size=400_000), make_op(3)]  # each under the batch budget
    async with open_convex_sink(
        api, fast_config(tmp_path, batch_max_bytes=BUDGET), metrics=metrics, health=health
    ) as sink:
        await sink.write(ops)
    assert fake.order == ["e:1", "e:2", "e:3"]
    assert applied(fake, ops[1]) == as_sent(ops[1])
    assert len(fake.parts) == 1
    assert dead_letters(tmp_path) == []
