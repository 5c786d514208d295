"""The Convex sink and history reader from the environment and the command line (`ingestor.sinks.factory`
calls these when `--sink convex` is chosen)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from ingestor.errors import HistoryUnavailableError, SinkError
from ingestor.logging import get_logger, redact
from ingestor.metrics import HEALTH, METRICS, Health, Metrics
from ingestor.sinks.convex import spool as spool_module
from ingestor.sinks.convex.client import ADMIN_IDENTITY, AuthError, ConfigError, ConvexHttp, TransientError
from ingestor.sinks.convex.config import ConvexSinkConfig, sink_config
from ingestor.sinks.convex.deployment import (
    KEY_VARIABLES,
    ConvexOptions,
    Deployment,
    DeploymentError,
    resolve_deployment,
)
from ingestor.sinks.convex.history import ConvexHistory
from ingestor.sinks.convex.sink import ConvexSink
from ingestor.sinks.convex.spool import Spool

log = get_logger("ingestor.sinks.convex")

# A local backend or stand-in may run without a key; anywhere else a missing key is worth a warning.
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})


@asynccontextmanager
async def open_convex_sink(
    api: ConvexHttp,
    config: ConvexSinkConfig,
    *,
    metrics: Metrics = METRICS,
    health: Health = HEALTH,
) -> AsyncIterator[ConvexSink]:
    """The sink with its delivery loop running; on exit: flush (bounded by the deadline), close."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    spool = await anyio.to_thread.run_sync(Spool, config.state_dir / spool_module.FILENAME)
    if spool.quarantined_ops:
        metrics.spool_quarantined.labels(what="ops").inc(spool.quarantined_ops)
    if spool.quarantined_index:
        metrics.spool_quarantined.labels(what="index").inc()
    if spool.ops:
        log.info("spool has undelivered ops from a previous run: delivering them first", spool_ops=spool.ops)
    sink = ConvexSink(api, spool, config, metrics=metrics, health=health)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            try:
                yield sink
            finally:
                with anyio.CancelScope(shield=True):
                    await sink.aclose()
                tg.cancel_scope.cancel()
    finally:
        await api.aclose()
        await sink.close_spool()


def _deployment(env: Mapping[str, str], options: ConvexOptions) -> Deployment:
    try:
        deployment = resolve_deployment(env, url_flag=options.url, key_file=options.key_file)
    except DeploymentError as error:
        raise SinkError(str(error)) from None
    if deployment.key is not None:
        redact(deployment.key.reveal())
    log.info(
        "convex deployment",
        url=deployment.url,
        url_from=deployment.url_source,
        key_from=deployment.key_source or "none",
    )
    if deployment.key is None and urlsplit(deployment.url).hostname not in _LOOPBACK:
        log.warning(
            "no convex key configured: ingest:applyBatch is internal and needs one on a real deployment "
            "(--convex-key-file, " + ", ".join(KEY_VARIABLES) + ")"
        )
    return deployment


@asynccontextmanager
async def open_sink_from_env(env: Mapping[str, str], options: ConvexOptions) -> AsyncIterator[ConvexSink]:
    """The Convex sink for `ingestor run|replay --sink convex`."""
    config = sink_config(env, options)
    deployment = _deployment(env, options)
    log.info("convex spool", state_dir=str(config.state_dir))
    async with open_convex_sink(ConvexHttp(deployment.url, deployment.key), config) as sink:
        yield sink


@asynccontextmanager
async def open_history_from_env(
    env: Mapping[str, str], options: ConvexOptions
) -> AsyncIterator[ConvexHistory]:
    """The Convex history reader for `ingestor show --sink convex`."""
    deployment = _deployment(env, options)
    history = ConvexHistory(ConvexHttp(deployment.url, deployment.key, acting_as=ADMIN_IDENTITY))
    where = f"the Convex deployment at {deployment.url} (from {deployment.url_source})"
    try:
        yield history
    except TransientError as error:
        raise HistoryUnavailableError(
            f"cannot reach {where}: {error}; check that it is running, or name another with "
            "--convex-url (or --sink sqlite:PATH for the embedded store)"
        ) from error
    except AuthError as error:
        raise HistoryUnavailableError(
            f"{where} refused the key (from {deployment.key_source or 'none: no key configured'}): "
            f"{error}; give its admin or deploy key with --convex-key-file or {KEY_VARIABLES[0]}"
        ) from error
    except ConfigError as error:
        raise HistoryUnavailableError(
            f"{where} lacks the history queries: {error}; deploy convex/ to it (npx convex deploy)"
        ) from error
    finally:
        await history.aclose()
