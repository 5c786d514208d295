"""The `ingestor` command: `run` (the daemon), `replay` (files as fast as the sink allows), and the
reading commands `show`, `usage` and `export` (`ingestor.cli.readback`).

Exit status: 0 done; 1 failure at run time (sink error, unknown id for `show`, Convex refusing the
key or missing its functions at the end of a one-shot run, Convex unreachable for `show`); 2 bad
usage (a bad `--sink`, a store that cannot be written, a socket or port that cannot be listened on,
a missing replay path, argparse errors); 75 a one-shot run (`replay`, `run` on stdin alone) ended with
operations still in the spool (Convex unreachable until the flush deadline): a later run with the
same state directory delivers them; 130 `replay` stopped by a signal before the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final

import anyio

from ingestor.checkpoints import Checkpoints
from ingestor.cli import readback
from ingestor.cli.input_report import report
from ingestor.cli.options import convex_options
from ingestor.cli.parser import build_parser
from ingestor.errors import (
    HistoryUnavailableError,
    MissingPathError,
    NotFoundError,
    SinkError,
    SourceConfigError,
)
from ingestor.logging import configure_logging, get_logger
from ingestor.normalize import Normalizer
from ingestor.pipeline import Pipeline, PipelineConfig
from ingestor.sinks.base import Leftover, Sink, Spooling
from ingestor.sinks.checkpointing import CheckpointingSink
from ingestor.sinks.convex.deployment import ConvexOptions
from ingestor.sinks.factory import SinkSpec, open_sink, resolve_sink
from ingestor.sinks.locations import default_state_dir
from ingestor.sources import Source
from ingestor.sources.accept import (
    ConnectionLimit,
    default_max_connections,
)
from ingestor.sources.auth import ProducerAuth, check_exposure, load_token
from ingestor.sources.files import REPLAY_QUEUE_CHUNKS, FilesSource, SkippedFile, expand_paths
from ingestor.sources.follow import FollowConfig, FollowSource, codex_sessions
from ingestor.sources.follow.normalizer import NormalizerFactory as FollowedFactory
from ingestor.sources.sockets import TcpSource, UnixSource, parse_host_port
from ingestor.sources.stdin import StdinSource
from ingestor.sources.tls import server_context
from ingestor.sources.wrap import WrapSource

log = get_logger("ingestor.cli")

EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNDELIVERED: Final = 75
"""sysexits' EX_TEMPFAIL: nothing is lost, try again later."""
EXIT_INTERRUPTED: Final = 130


def normalizer_factory(conversation_id: str | None) -> Callable[[str], Normalizer]:
    def make(source: str) -> Normalizer:
        return Normalizer(source, conversation_id=conversation_id)

    return make


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    return PipelineConfig(
        max_line_bytes=args.max_line_bytes,
        batch_max_ops=args.batch_max_ops,
        batch_max_age=args.batch_max_age_ms / 1000,
    )


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert is None and args.tls_key is None and args.tls_client_ca is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise SourceConfigError("--tls-cert and --tls-key go together (and --tls-client-ca needs them)")
    return server_context(args.tls_cert, args.tls_key, args.tls_client_ca)


def state_dir(args: argparse.Namespace) -> Path:
    """`--state-dir`, else the per-user default (where the Convex spool also lives)."""
    return Path(args.state_dir) if args.state_dir else default_state_dir(os.environ).path


def open_checkpoints(args: argparse.Namespace) -> Checkpoints:
    return Checkpoints(state_dir(args))


def follow_source(checkpoints: Checkpoints, paths: Sequence[str], config: FollowConfig) -> FollowSource:
    """`paths` followed: directories for their session files, files whatever their names."""
    if not paths:
        sessions = codex_sessions(os.environ)
        sessions.mkdir(parents=True, exist_ok=True)  # Codex creates it on its first session otherwise
        paths = [str(sessions)]
    roots = [Path(p) for p in paths if os.path.isdir(p)]
    files = [p for p in paths if not os.path.isdir(p)]
    return FollowSource(roots, checkpoints, config, files=files)


def run_sources(args: argparse.Namespace, checkpoints: Checkpoints | None = None) -> list[Source]:
    """The sources of `run`; SourceConfigError when they must not start as given."""
    auth = ProducerAuth(load_token(args.auth_token_file)) if args.auth_token_file else None
    tls = _tls_context(args)
    tcp_hosts = [parse_host_port(address)[0] for address in args.tcp]
    mutual_tls = tls is not None and args.tls_client_ca is not None
    check_exposure(tcp_hosts, authenticated=auth is not None or mutual_tls, insecure=args.insecure_tcp)
    limit = ConnectionLimit(args.max_connections or default_max_connections())
    sources: list[Source] = [UnixSource(path, limit, mode=args.unix_mode, auth=auth) for path in args.unix]
    sources.extend(TcpSource(address, limit, auth=auth, tls=tls) for address in args.tcp)
    if checkpoints is not None:
        config = FollowConfig(idle=args.follow_idle, poll=args.follow_poll)
        sources.append(follow_source(checkpoints, args.follow, config))
    if args.stdin or not sources:
        sources.insert(0, StdinSource())
    return sources


async def _stop_on_signal(pipeline: Pipeline) -> None:
    """First SIGTERM/SIGINT: stop reading, then flush and exit 0. A second one: exit at once."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        stopping = False
        async for signum in signals:
            if stopping:
                log.warning("second signal: exiting without flushing", signal=signal.Signals(signum).name)
                os._exit(128 + signum)
            stopping = True
            log.info("stopping: flushing what was read", signal=signal.Signals(signum).name)
            pipeline.stop()


async def run_pipeline(
    spec: SinkSpec,
    sources: Sequence[Source],
    config: PipelineConfig,
    factory: Callable[[str], Normalizer],
    convex: ConvexOptions,
    watch: Callable[[Pipeline], Coroutine[Any, Any, None]] | None = None,
    checkpoints: Checkpoints | None = None,
    on_signals: Callable[[Pipeline], Coroutine[Any, Any, None]] = _stop_on_signal,
) -> tuple[Pipeline, Leftover | None]:
    """Open the sink, run the pipeline until its sources end or a signal stops it (`on_signals`),
    close the sink. `watch` runs beside it (the progress bar), cancelled at the end. Also returns what
    the sink could not deliver before it closed. With `checkpoints`, those of the followed files'
    streams are saved as their lines become durable."""
    streams: FollowedFactory = factory
    for source in sources:
        if isinstance(source, FollowSource):
            streams = source.normalizer_factory(streams)
    async with open_sink(spec, os.environ, convex) as sink:
        writes: Sink = sink if checkpoints is None else CheckpointingSink(sink, checkpoints)
        pipeline = Pipeline(writes, streams, config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(on_signals, pipeline)
            if watch is not None:
                tg.start_soon(watch, pipeline)
            await pipeline.run(sources)
            tg.cancel_scope.cancel()
    log.info("pipeline done", sink=str(spec), **pipeline.summary(), **stored_summary(pipeline, sink))
    _report_input(
        pipeline,
        [skipped for source in sources if isinstance(source, FilesSource) for skipped in source.skipped],
    )
    return pipeline, sink.leftover() if isinstance(sink, Spooling) else None


SUMMARY_CONVERSATIONS: Final = 20
"""Conversation ids named in the summary at most (their count is always there)."""


def stored_summary(pipeline: Pipeline, sink: Any) -> dict[str, Any]:
    """The conversations a run touched and what the store made of its rows: new (`inserted`),
    `updated`, already stored (`duplicate`: a second replay of the same input is all duplicates)."""
    touched = sorted(pipeline.batcher.conversations)
    counts = getattr(sink, "counts", None)  # stores that apply operations count their outcomes
    rows = (
        {}
        if counts is None
        else {
            "rows_new": counts["inserted"],
            "rows_updated": counts["updated"],
            "rows_already_stored": counts["duplicate"],
            "rows_rejected": counts["rejected"],
        }
    )
    capped = {"conversations_capped": True} if pipeline.batcher.conversations_capped else {}
    return {
        "conversations": len(touched),
        **capped,  # the count is a lower bound: the batcher stops remembering ids (TRACKED_CONVERSATIONS)
        "conversation_ids": touched[:SUMMARY_CONVERSATIONS],
        **rows,
    }


def _report_input(pipeline: Pipeline, skipped: Sequence[SkippedFile]) -> None:
    """Warn about input that is not Codex (stored raw, or skipped), with a hint at the likely mistake."""
    for line in report(pipeline.stats, pipeline.not_codex_streams, pipeline.not_codex_examples, skipped):
        print(line, file=sys.stderr)


def _undelivered_status(leftover: Leftover | None) -> int:
    """A one-shot run's exit status for what its sink left undelivered (0 when nothing)."""
    if leftover is None:
        return 0
    where = f"{leftover.ops} operations wait in the spool in {leftover.state_dir}"
    if leftover.refused is not None:
        return _fail(f"convex refused the requests ({leftover.refused}, see the log); {where}", EXIT_FAILURE)
    return _fail(
        f"not delivered before the flush deadline: {where}; a later run with "
        f"--state-dir {leftover.state_dir} delivers them",
        EXIT_UNDELIVERED,
    )


async def _run(args: argparse.Namespace, spec: SinkSpec) -> int:
    from ingestor.metrics import serving  # prometheus-client loads only for `run`

    checkpoints = open_checkpoints(args) if args.follow is not None else None
    try:
        sources = run_sources(args, checkpoints)
        with serving(args.metrics):
            _, leftover = await run_pipeline(
                spec,
                sources,
                pipeline_config(args),
                normalizer_factory(args.conversation_id),
                convex_options(args, delivery=True),
                checkpoints=checkpoints,
            )
    finally:
        if checkpoints is not None:
            checkpoints.close()
    one_shot = all(isinstance(source, StdinSource) for source in sources)
    # A daemon stopped by a signal leaves its spool to its next start, as documented: that is no failure.
    return _undelivered_status(leftover) if one_shot else 0


async def _replay(args: argparse.Namespace, spec: SinkSpec) -> int:
    paths = expand_paths(args.paths)
    began = time.perf_counter()
    # With --state-dir, regular files resume where the last replay left them (checkpoints).
    checkpoints = open_checkpoints(args) if args.state_dir is not None else None
    regular: list[str] = []
    others: list[str] = []
    for path in paths:
        resumable = checkpoints is not None and path != "-" and os.path.isfile(path)
        (regular if resumable else others).append(path)
    files = FilesSource(others)
    sources: list[Source] = [files]
    resumed: FollowSource | None = None
    if checkpoints is not None:
        resumed = FollowSource([], checkpoints, FollowConfig(once=True), files=regular)
        sources.append(resumed)

    async def progress_bar(pipeline: Pipeline) -> None:
        from ingestor.cli.progress import show_progress  # tqdm loads only for a replay on a terminal

        await show_progress(files.progress, pipeline.stats)

    try:
        pipeline, leftover = await run_pipeline(
            spec,
            sources,
            dataclasses.replace(pipeline_config(args), queue_chunks=REPLAY_QUEUE_CHUNKS),
            normalizer_factory(args.conversation_id),
            convex_options(args, delivery=True),
            watch=progress_bar if sys.stderr.isatty() and checkpoints is None else None,
            checkpoints=checkpoints,
        )
    finally:
        if checkpoints is not None:
            checkpoints.close()
    seconds = time.perf_counter() - began
    lines = pipeline.stats.lines
    rate = round(lines / seconds) if seconds else None
    done = {
        "files": files.progress.files_done + (resumed.files_read if resumed is not None else 0),
        "skipped": len(files.skipped),
        **({"unchanged": len(regular) - resumed.files_read} if resumed is not None else {}),
        "lines": lines,
    }
    if pipeline.stopped:
        # What was read is stored, but not everything: a caller must not take this for success.
        log.warning("replay interrupted", **done)
        _undelivered_status(leftover)
        return EXIT_INTERRUPTED
    log.info(
        "replay done",
        **done,
        bytes=pipeline.stats.bytes_read,
        seconds=round(seconds, 3),
        lines_per_second=rate,
    )
    return _undelivered_status(leftover)


WRAP_LAG_WORTH_SAYING: Final = 1.0
"""Seconds between the end of the wrapped command's output and the end of its ingestion that are
worth a line on stderr (the user waited for the wrapper that long after the command was done)."""
FORWARDED_SIGNALS: Final = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _forward_signals(source: WrapSource) -> Callable[[Pipeline], Coroutine[Any, Any, None]]:
    """The wrapped command gets the signals sent to us; we go on until its output ends. SIGINT is only
    held off: a terminal's Ctrl-C reaches the whole foreground process group, the command included."""

    async def forward(_: Pipeline) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, *FORWARDED_SIGNALS) as signals:
            async for signum in signals:
                if signum != signal.SIGINT and source.process is not None:
                    source.process.send_signal(signum)

    return forward


async def _wrap(args: argparse.Namespace, spec: SinkSpec) -> int:
    command = args.wrapped[1:] if args.wrapped[:1] == ["--"] else args.wrapped
    source = WrapSource(command, state_dir(args) / "wrap")
    _, leftover = await run_pipeline(
        spec,
        [source],
        pipeline_config(args),
        normalizer_factory(args.conversation_id),
        convex_options(args, delivery=True),
        on_signals=_forward_signals(source),
    )
    lag = time.monotonic() - source.output_ended
    assert source.process is not None
    status = await anyio.to_thread.run_sync(source.process.wait)
    if source.drained and lag >= WRAP_LAG_WORTH_SAYING:
        print(
            f"ingestor: ingestion fell behind: the command's output was all stored {lag:.1f} s after it "
            "ended (kept on disk meanwhile: the command never waited)",
            file=sys.stderr,
        )
    if not source.drained:
        print(
            f"ingestor: not all of the output was stored: `ingestor replay {source.spill}` stores it",
            file=sys.stderr,
        )
    _undelivered_status(leftover)  # says what waits in the spool; the status stays the command's
    if status < 0:
        # Killed by a signal: die of the same one, as the command did, for whoever waits on us.
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


READING: Final = ("show", "usage", "export")
"""The commands that read a store (the sink notice says "reading from"; no store is created)."""

_COMMANDS: Final = {
    "run": _run,
    "replay": _replay,
    "wrap": _wrap,
    "show": readback.show_command,
    "usage": readback.usage_command,
    "export": readback.export_command,
}


def _leaf(error: BaseException) -> BaseException:
    """The first real error inside (nested) task-group exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _fail(message: str, status: int) -> int:
    print(f"ingestor: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "show" and args.what != readback.CONVERSATIONS and args.id is None:
        parser.error(f"show {args.what} needs an ID")
    configure_logging(args.log_level)
    try:
        spec, notice = resolve_sink(
            args.sink, os.environ, convex_url=args.convex_url, reading=args.command in READING
        )
    except SinkError as error:
        return _fail(str(error), EXIT_USAGE)
    if notice:
        print(notice, file=sys.stderr)
    command: Any = _COMMANDS[args.command]
    try:
        status: int = anyio.run(command, args, spec)
    except BaseException as raised:  # task groups wrap errors: unwrap, then classify
        cause = _leaf(raised)
        if isinstance(cause, (KeyboardInterrupt, SystemExit)):
            raise
        # The message says what and where; the traceback is for whoever debugs the ingestor itself.
        log.debug("failed", exc_info=raised)
        if isinstance(cause, MissingPathError):
            return _fail(f"no such file or directory: {cause}", EXIT_USAGE)
        if isinstance(cause, (SinkError, SourceConfigError)):
            return _fail(str(cause), EXIT_USAGE)
        if isinstance(cause, NotFoundError):  # also a missing store (sqlite.history.StoreMissingError)
            return _fail(f"{cause} (in {spec})", EXIT_FAILURE)
        if isinstance(cause, HistoryUnavailableError):
            return _fail(str(cause), EXIT_FAILURE)
        return _fail(f"failed: {cause} (--log-level debug shows the traceback)", EXIT_FAILURE)
    return status
