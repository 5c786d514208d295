"""`/readyz` and the delivery metrics tell the truth while Convex fails (ingestor.sinks.convex)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestor.metrics import Health, Metrics
from ingestor.sinks.convex.factory import open_convex_sink
from tests.helpers.convex_fake import FakeConvex, fast_config, make_op
from tests.helpers.daemon import wait_until

pytestmark = pytest.mark.anyio


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


@pytest.mark.parametrize("status", [503, 500, 429])
async def test_not_ready_once_deliveries_keep_failing_and_ready_again_after_a_success(
    tmp_path: Path, metrics: Metrics, health: Health, status: int
) -> None:
    fake = FakeConvex(status_forever=status)
    config = fast_config(tmp_path, unready_after=0.2)
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(n) for n in range(3)])
        await wait_until(lambda: len(fake.requests) >= 1)
        assert sample(metrics, "ingestor_delivery_consecutive_failures") >= 1
        await wait_until(lambda: health.reasons == {"delivery_failing"})
        assert sample(metrics, "ingestor_ready") == 0
        assert sample(metrics, "ingestor_oldest_undelivered_seconds") >= 0.2
        failures = sample(metrics, "ingestor_delivery_consecutive_failures")
        assert failures >= 2 and failures == len(fake.requests)

        fake.status_forever = None
        await wait_until(lambda: fake.order == ["e:0", "e:1", "e:2"])
        await wait_until(lambda: not health.reasons)
        assert sample(metrics, "ingestor_ready") == 1
        assert sample(metrics, "ingestor_delivery_consecutive_failures") == 0
        await wait_until(lambda: sample(metrics, "ingestor_oldest_undelivered_seconds") == 0)


async def test_a_failure_shorter_than_the_limit_never_makes_it_unready(
    tmp_path: Path, metrics: Metrics, health: Health
) -> None:
    fake = FakeConvex(script=[503, 503])
    config = fast_config(tmp_path, unready_after=3600)
    async with open_convex_sink(fake.api(), config, metrics=metrics, health=health) as sink:
        await sink.write([make_op(1)])
        await wait_until(lambda: fake.order == ["e:1"])
        assert health.reasons == set()
    assert sample(metrics, "ingestor_delivery_consecutive_failures") == 0
