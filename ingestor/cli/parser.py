"""The command line's arguments: `build_parser` (what `main` in ingestor/cli/commands.py parses)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ingestor import __version__
from ingestor.batch import DEFAULT_MAX_AGE, DEFAULT_MAX_OPS
from ingestor.cli import readback
from ingestor.framing import DEFAULT_MAX_LINE_BYTES
from ingestor.sinks.convex.deployment import add_convex_arguments
from ingestor.sinks.factory import SINK_SYNTAX
from ingestor.sources.accept import (
    DEFAULT_MAX_CONNECTIONS,
    RESERVED_FDS,
)
from ingestor.sources.follow import DEFAULT_IDLE, DEFAULT_POLL
from ingestor.sources.sockets import DEFAULT_UNIX_MODE, parse_host_port


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _unix_mode(text: str) -> int:
    if text not in ("600", "660", "0600", "0660"):
        raise argparse.ArgumentTypeError("must be 600 or 660")
    return int(text, 8)


def _host_port(text: str) -> str:
    try:
        parse_host_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sink",
        metavar="SINK",
        help=f"where operations go: {SINK_SYNTAX}. Default: convex when --convex-url or a CONVEX_* "
        "deployment variable is set, else the embedded store in the user's data directory "
        "(~/.local/share/codex-ingestor/ingestor.db on Linux)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _add_pipeline(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conversation-id",
        metavar="ID",
        help="file every stream under this conversation instead of the one Codex reports",
    )
    parser.add_argument(
        "--max-line-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_LINE_BYTES,
        metavar="N",
        help="longer lines are recorded as oversize (their first 64 KiB) and skipped (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-max-ops",
        type=_positive_int,
        default=DEFAULT_MAX_OPS,
        metavar="N",
        help="a batch goes to the sink as soon as the input pauses (nothing more buffered); "
        "during a burst, at the latest at this many operations (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-max-age-ms",
        type=_positive_int,
        default=int(DEFAULT_MAX_AGE * 1000),
        metavar="MS",
        help="or when its oldest operation is this old, if the input never pauses (default: "
        "%(default)s). The Convex sink batches again for the network, with its own age",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingestor", description="Capture Codex CLI event streams.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the daemon: read live streams until stopped")
    run.add_argument(
        "--stdin",
        action="store_true",
        help="read standard input (the default without --unix/--tcp); alone, it stops at end of input",
    )
    run.add_argument(
        "--unix",
        action="append",
        default=[],
        metavar="PATH",
        help="listen on a Unix socket; each connection is its own stream (repeatable)",
    )
    run.add_argument(
        "--tcp",
        action="append",
        default=[],
        metavar="HOST:PORT",
        type=_host_port,
        help="listen on TCP; each connection is its own stream (repeatable). Off loopback, needs "
        "--auth-token-file (or --insecure-tcp)",
    )
    run.add_argument(
        "--auth-token-file",
        type=Path,
        metavar="FILE",
        help="producers on --unix/--tcp must send this token in a hello line first (docs/security.md); "
        "the file's content without its trailing newline, readable by its owner only",
    )
    run.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="serve --tcp over TLS: certificate chain (PEM)"
    )
    run.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's private key (PEM)")
    run.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="with --tls-cert: require a client certificate issued by these CAs (PEM); counts as producer "
        "authentication for --tcp",
    )
    run.add_argument(
        "--insecure-tcp",
        action="store_true",
        help="allow --tcp on a non-loopback address without --auth-token-file",
    )
    run.add_argument(
        "--unix-mode",
        type=_unix_mode,
        default=DEFAULT_UNIX_MODE,
        metavar="MODE",
        help="permissions of the --unix sockets: 600 (default: the daemon's user only) or 660 (its group)",
    )
    run.add_argument(
        "--max-connections",
        type=_positive_int,
        metavar="N",
        help="producer connections open at once, over all listeners; more wait, unread, until one "
        f"closes (default: {DEFAULT_MAX_CONNECTIONS}, or the open-files limit minus {RESERVED_FDS})",
    )
    run.add_argument(
        "--follow",
        action="extend",
        nargs="*",
        metavar="PATH",
        help="follow Codex session files (rollout-*.jsonl[.zst]) under each directory, recursively, and "
        "each file named, as they are written; no PATH: $CODEX_HOME/sessions (~/.codex/sessions). "
        "Where each file stands is kept in --state-dir",
    )
    run.add_argument(
        "--follow-idle",
        type=_positive_float,
        default=DEFAULT_IDLE,
        metavar="SECONDS",
        help="a followed file quiet this long is finished: its end-of-session facts are stored "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--follow-poll",
        type=_positive_float,
        default=DEFAULT_POLL,
        metavar="SECONDS",
        help="rescan the followed paths this often, for file systems that send no change notifications "
        "(default: %(default)s)",
    )
    _add_pipeline(run)
    run.add_argument(
        "--metrics",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics, /healthz and /readyz here (default: off)",
    )
    _add_common(run)
    add_convex_arguments(run, delivery=True)

    replay = commands.add_parser("replay", help="process files, directories (recursively) or - (stdin)")
    replay.add_argument("paths", nargs="+", metavar="PATH")
    _add_pipeline(replay)
    _add_common(replay)
    add_convex_arguments(replay, delivery=True)

    wrap = commands.add_parser(
        "wrap",
        help="run a Codex command (after --): its output passes through unchanged and is ingested",
    )
    wrap.add_argument("wrapped", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    _add_pipeline(wrap)
    _add_common(wrap)
    add_convex_arguments(wrap, delivery=True)

    show_cmd = commands.add_parser("show", help="read history back from a sink")
    readback.add_show(show_cmd)
    _add_common(show_cmd)
    add_convex_arguments(show_cmd, delivery=False)

    usage_cmd = commands.add_parser("usage", help="tokens used, by day, week, month, session or model")
    readback.add_usage(usage_cmd)
    _add_common(usage_cmd)
    add_convex_arguments(usage_cmd, delivery=False)

    export_cmd = commands.add_parser("export", help="a conversation as Markdown, HTML or JSON")
    readback.add_export(export_cmd)
    _add_common(export_cmd)
    add_convex_arguments(export_cmd, delivery=False)
    return parser
