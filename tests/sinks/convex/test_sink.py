"""The Convex sink against an in-process fake of `ingest:applyBatch` (httpx.MockTransport)."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import anyio
import httpx
import orjson
import pytest
import structlog

from ingestor.logging import configure_logging, get_logger, redact
from ingestor.metrics import Health, Metrics
from ingestor.sinks.convex.client import ConvexHttp
from ingestor.sinks.convex.config import ConvexSinkConfig
from ingestor.sinks.convex.dead_letter import DEAD_LETTER_FILE
from ingestor.sinks.convex.factory import open_convex_sink
from ingestor.sinks.convex.history import ConvexHistory
from tests.helpers.convex_fake import FakeConvex, fast_config, make_op

pytestmark = pytest.mark.anyio


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def dead_letters(state_dir: Path) -> list[dict[str, object]]:
    path = state_dir / DEAD_LETTER_FILE
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.002)


async def test_count_trigger_sends_full_batches_then_the_rest_on_age(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex()
    config = fast_config(tmp_path, batch_max_ops=3, batch_max_age=0.2)
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(7)])
        await wait_until(lambda: len(fake.requests) == 2)
        assert [len(r) for r in fake.requests] == [3, 3]
        await anyio.sleep(0.05)
        assert len(fake.requests) == 2, "the lone 7th op waits for its age trigger"
        await wait_until(lambda: len(fake.requests) == 3, timeout=1.0)
    assert fake.order == [f"e:{n}" for n in range(7)]
    assert sample(metrics, "ingestor_ops_delivered_total", result="inserted") == 7
    assert sample(metrics, "ingestor_spool_ops") == 0


async def test_size_trigger_caps_request_bytes(tmp_path: Path, metrics: Metrics, health: Health) -> None:
    fake = FakeConvex()
    config = fast_config(tmp_path, batch_max_bytes=2500, batch_max_age=10.0)
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(n, size=1000) for n in range(5)])
        await wait_until(lambda: len(fake.requests) >= 2)
        assert [len(r) for r in fake.requests[:2]] == [2, 2]
    assert sum(len(r) for r in fake.requests) == 5


async def test_age_trigger_sends_a_partial_batch(tmp_path: Path, metrics: Metrics, health: Health) -> None:
    fake = FakeConvex()
    config = fast_config(tmp_path, batch_max_age=0.1)
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health) as sink:
        started = anyio.current_time()
        await sink.write([make_op(1)])
        await sink.write([make_op(2)])
        await wait_until(lambda: len(fake.requests) == 1)
        assert anyio.current_time() - started >= 0.09
        assert len(fake.requests[0]) == 2


@pytest.mark.parametrize(
    "failures",
    [
        [503, 503, 503],
        [429, 429],
        [500, 502, 504, 408],
        [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("eof")],
    ],
    ids=["503", "429", "5xx-408", "timeout-network"],
)
async def test_transient_failures_are_retried_until_delivered(
    tmp_path: Path, metrics: Metrics, health: Health, failures: list[int | Exception]
) -> None:
    fake = FakeConvex(script=list(failures))
    async with open_convex_sink(fake.api(), fast_config(tmp_path), metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(5)])
    assert fake.order == [f"e:{n}" for n in range(5)]
    assert len(fake.requests) == len(failures) + 1
    [family] = metrics.retries.collect()
    assert sum(s.value for s in family.samples if s.name.endswith("_total")) == len(failures)
    assert dead_letters(tmp_path) == []


async def test_retry_honours_retry_after_within_the_cap(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    calls: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(anyio.current_time())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0.2"}, json={"code": "RateLimited"})
        ops = orjson.loads(request.content)["args"]["ops"]
        return httpx.Response(200, json={"status": "success", "value": [{"status": "inserted"}] * len(ops)})

    api = ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(handler))
    config = fast_config(tmp_path, retry_max_wait=1.0)
    async with open_convex_sink(api, config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(1)])
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.19


async def test_bisect_isolates_the_offender_and_delivers_everything_else(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex(batch_error_keys={"e:5"}, http400_keys={"e:11"})
    config = fast_config(tmp_path, batch_max_ops=16, batch_max_age=0.05)
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(16)])
    assert fake.order == [f"e:{n}" for n in range(16) if n not in (5, 11)], "the rest applied, in order"
    letters = dead_letters(tmp_path)
    assert [(d["cause"], d["op"]["key"]) for d in letters] == [("rejected", "e:5"), ("rejected", "e:11")]  # type: ignore[index]
    assert letters[0]["reason"] == "Uncaught Error: bad op"
    assert "HTTP 400" in str(letters[1]["reason"]) and "value too deep" in str(letters[1]["reason"])
    assert letters[0]["op"] == orjson.loads(orjson.dumps(make_op(5))), "the op is kept whole"
    assert isinstance(letters[0]["deadLetteredAt"], int)
    assert sample(metrics, "ingestor_dead_letters_total", cause="rejected") == 2
    assert sample(metrics, "ingestor_spool_ops") == 0
    # 16 -> 8+8 -> 4+4 | 4+4 -> 2+2 | 2+2 -> 1+1 | 1+1: log2 steps per offender, not one call per op.
    assert len(fake.requests) <= 1 + 2 * 2 * 4


async def test_per_op_rejections_are_dead_lettered_and_the_batch_applies(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex(rejected_keys={"e:2"})
    async with open_convex_sink(fake.api(), fast_config(tmp_path), metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(4)])
    assert len(fake.requests) == 1
    assert fake.order == ["e:0", "e:1", "e:3"]
    [letter] = dead_letters(tmp_path)
    assert letter["reason"] == "field too large"
    assert letter["op"]["key"] == "e:2"  # type: ignore[index]
    # It holds what the op held (prompts, command output): the daemon's user's only.
    assert stat.S_IMODE((tmp_path / DEAD_LETTER_FILE).stat().st_mode) == 0o600


async def test_auth_failure_makes_the_sink_not_ready_until_the_key_works(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex(status_forever=401)
    async with open_convex_sink(fake.api(), fast_config(tmp_path), metrics=metrics, health=health) as sink:
        await sink.write([make_op(1)])
        await wait_until(lambda: len(fake.requests) >= 3)
        assert health.reasons == {"convex_auth"}
        assert sample(metrics, "ingestor_ready") == 0
        assert fake.order == []
        fake.status_forever = None
        await wait_until(lambda: fake.order == ["e:1"])
        await wait_until(lambda: not health.reasons)
        assert sample(metrics, "ingestor_ready") == 1
    assert dead_letters(tmp_path) == [], "auth failures never dead-letter"


async def test_missing_function_is_a_config_incident_not_a_rejection(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        message = "Could not find public function for 'ingest:applyBatch'"
        return httpx.Response(200, json={"status": "error", "errorMessage": message})

    api = ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(handler))
    async with open_convex_sink(
        api, fast_config(tmp_path, flush_timeout=0.2), metrics=metrics, health=health
    ) as sink:
        await sink.write([make_op(1), make_op(2)])
        await wait_until(lambda: health.reasons == {"convex_config"})
    assert dead_letters(tmp_path) == []


async def test_spool_survives_a_restart_and_is_delivered_first(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    down = FakeConvex(status_forever=503)
    config = fast_config(tmp_path, flush_timeout=0.1)
    async with open_convex_sink(down.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(3)])
    assert down.order == []
    assert (tmp_path / "spool.sqlite3").exists()

    up = FakeConvex()
    async with open_convex_sink(up.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(3, 5)])
    assert up.order == [f"e:{n}" for n in range(5)], "the backlog goes out before newer ops"


async def test_duplicates_after_a_lost_response_leave_one_row(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex()
    original = fake.handle
    lost = [True]

    async def commit_then_drop(request: httpx.Request) -> httpx.Response:
        response = await original(request)
        if lost and lost.pop():
            raise httpx.ReadError("connection reset after commit")
        return response

    api = ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(commit_then_drop))
    async with open_convex_sink(api, fast_config(tmp_path), metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(3)])
    assert fake.order == ["e:0", "e:1", "e:2"]
    assert sample(metrics, "ingestor_ops_delivered_total", result="duplicate") == 3


async def test_full_spool_blocks_write_and_reports_not_ready(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex(gate=anyio.Event())
    config = fast_config(tmp_path, spool_max_bytes=3000, batch_max_ops=1)
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(1, size=1000), make_op(2, size=1000)])
        unblocked = anyio.Event()

        async def third_write() -> None:
            await sink.write([make_op(3, size=1000)])
            unblocked.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(third_write)
            await wait_until(lambda: health.reasons == {"spool_full"})
            await anyio.sleep(0.05)
            assert not unblocked.is_set(), "write() waits while the spool is at its cap"
            assert fake.gate is not None
            fake.gate.set()
        assert unblocked.is_set()
        assert health.reasons == set()
    assert fake.order == ["e:1", "e:2", "e:3"]


async def test_flush_deadline_bounds_aclose_and_keeps_the_rest(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex(status_forever=503)
    config = fast_config(tmp_path, flush_timeout=0.2)
    started = anyio.current_time()
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(1)])
    assert anyio.current_time() - started < 1.0
    assert sample(metrics, "ingestor_spool_ops") == 1


async def test_the_key_is_sent_but_never_logged(tmp_path: Path, metrics: Metrics, health: Health) -> None:
    key = "prod:happy-animal-123|eyJ2MiI6InNlY3JldCJ9"
    stream = io.StringIO()
    configure_logging("debug", stream=stream, json=True)
    try:
        fake = FakeConvex(script=[401, 503])
        async with open_convex_sink(
            fake.api(key), fast_config(tmp_path), metrics=metrics, health=health
        ) as sink:
            await sink.write([make_op(1)])
        redact(key)
        get_logger("test").error("oops", detail=f"header was Convex {key}")
    finally:
        structlog.reset_defaults()
    assert fake.headers[0]["authorization"] == f"Convex {key}"
    output = stream.getvalue()
    assert "convex refused the request" in output
    assert key not in output
    assert "[REDACTED]" in output


def test_config_enforces_convex_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2000"):
        ConvexSinkConfig(state_dir=tmp_path, batch_max_ops=2001)
    with pytest.raises(ValueError, match="batch max bytes"):
        ConvexSinkConfig(state_dir=tmp_path, batch_max_bytes=8 * 1024 * 1024 + 1)


async def test_history_reader_follows_every_page() -> None:
    pages = {
        None: {"page": [{"n": 1}, {"n": 2}], "isDone": False, "continueCursor": "c1"},
        "c1": {"page": [{"n": 3}], "isDone": False, "continueCursor": "c2"},
        "c2": {"page": [], "isDone": True, "continueCursor": "c2"},
    }
    seen: list[dict[str, object]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        assert request.url.path == "/api/query"
        seen.append(body)
        if body["path"] == "history:listEvents":
            value: object = pages[body["args"]["paginationOpts"]["cursor"]]
        elif body["path"] == "history:getTurn":
            value = None
        else:
            value = {"conversationId": body["args"]["conversationId"]}
        return httpx.Response(200, json={"status": "success", "value": value})

    history = ConvexHistory(ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(handler)))
    assert await history.list_events("c") == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert await history.list_events("c", limit=2) == [{"n": 1}, {"n": 2}]
    assert await history.get_conversation("c") == {"conversationId": "c"}
    assert await history.get_turn("t") is None
    await history.aclose()
    assert seen[0]["args"] == {"conversationId": "c", "paginationOpts": {"numItems": 200, "cursor": None}}


async def test_an_unusable_success_value_counts_the_batch_delivered(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "value": "ok"})

    api = ConvexHttp("http://convex.test", None, transport=httpx.MockTransport(handler))
    async with open_convex_sink(api, fast_config(tmp_path), metrics=metrics, health=health) as sink:
        await sink.write([make_op(1), make_op(2)])
    assert sample(metrics, "ingestor_ops_delivered_total", result="unknown") == 2
    assert sample(metrics, "ingestor_spool_ops") == 0, "not re-sent forever"
