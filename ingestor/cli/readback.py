"""The reading commands' arguments and bodies: `show` (one id, or `conversations`), `usage` and
`export`. `ingestor.cli` wires them; what they print is made in `ingestor.cli.show`,
`ingestor.cli.conversations`, `ingestor.cli.usage` and `ingestor.cli.export`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Final, TextIO

from ingestor.cli import conversations, usage
from ingestor.cli.export import FORMATS, gather
from ingestor.cli.export import html as export_html
from ingestor.cli.export import markdown as export_markdown
from ingestor.cli.options import convex_options
from ingestor.cli.show import WHAT, EventFilter, escape_controls, show
from ingestor.sinks.factory import SinkSpec, open_history

CONVERSATIONS: Final = "conversations"
_DAY_MS: Final = 86_400_000


def day(text: str) -> dt.date:
    """A `--since`/`--until` date: YYYY-MM-DD (UTC)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _ms(date: dt.date) -> int:
    return int(dt.datetime.combine(date, dt.time(), dt.UTC).timestamp() * 1000)


def add_show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=(CONVERSATIONS, *WHAT))
    parser.add_argument(
        "id",
        metavar="ID",
        nargs="?",
        help="conversation id, turn id, command call id, or conversation id (events); none for conversations",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable: the history query's shape")
    parser.add_argument(
        "--limit", type=_positive, metavar="N", help="events, conversations: at most N (the first)"
    )
    listing = parser.add_argument_group("conversations")
    listing.add_argument(
        "--since", type=day, metavar="DATE", help="active on or after DATE (YYYY-MM-DD, UTC)"
    )
    listing.add_argument("--until", type=day, metavar="DATE", help="started on or before DATE")
    listing.add_argument("--cwd", metavar="DIR", help="working directory DIR or below it")
    listing.add_argument("--model", metavar="MODEL", help="latest model used")
    events = parser.add_argument_group("events")
    events.add_argument("--turn", metavar="TURN_ID", help="only this turn's events")
    events.add_argument("--method", metavar="PATTERN", help="only these methods (a glob: 'item/*')")
    events.add_argument("--tail", type=_positive, metavar="N", help="the last N")


def add_usage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", choices=usage.BY, default="day", help="grouping (default: %(default)s)")
    parser.add_argument("--since", type=day, metavar="DATE", help="from DATE (YYYY-MM-DD, UTC), inclusive")
    parser.add_argument("--until", type=day, metavar="DATE", help="to DATE, inclusive")
    parser.add_argument(
        "--cost",
        action="store_true",
        help="add an estimated cost from the dated price table (ingestor/cli/prices.py)",
    )
    parser.add_argument("--json", action="store_true", help="a JSON list of rows")


def add_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=("conversation",))
    parser.add_argument("id", metavar="ID", help="conversation id")
    parser.add_argument("--format", choices=FORMATS, default="md", help="default: %(default)s")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here (default: stdout)")


def _json(value: Any, out: TextIO) -> None:
    # The stdlib, not orjson: stored values may hold integers beyond 64 bits.
    out.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


async def show_command(args: argparse.Namespace, spec: SinkSpec) -> int:
    async with open_history(spec, os.environ, convex_options(args, delivery=False)) as reader:
        if args.what == CONVERSATIONS:
            filters = conversations.Filters(
                since=None if args.since is None else _ms(args.since),
                until=None if args.until is None else _ms(args.until) + _DAY_MS - 1,
                cwd=args.cwd,
                model=args.model,
                limit=args.limit,
            )
            rows = await conversations.list_conversations(reader, filters)
            if args.json:
                _json(rows, sys.stdout)
            else:
                sys.stdout.write(escape_controls(conversations.render_conversations(rows)) + "\n")
            return 0
        events = EventFilter(turn=args.turn, method=args.method, tail=args.tail)
        await show(reader, args.what, args.id, sys.stdout, as_json=args.json, limit=args.limit, events=events)
    return 0


async def usage_command(args: argparse.Namespace, spec: SinkSpec) -> int:
    async with open_history(spec, os.environ, convex_options(args, delivery=False)) as reader:
        snapshots = await usage.read_snapshots(reader)
    rows = usage.report(usage.increments(snapshots), args.by, args.since, args.until, with_cost=args.cost)
    if args.json:
        _json(rows, sys.stdout)
    else:
        sys.stdout.write(usage.render(rows, args.by, args.cost) + "\n")
    return 0


async def export_command(args: argparse.Namespace, spec: SinkSpec) -> int:
    async with open_history(spec, os.environ, convex_options(args, delivery=False)) as reader:
        data = await gather(reader, args.id)
    if args.format == "json":
        text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    elif args.format == "html":
        text = export_html.render(data)
    else:
        text = export_markdown.render(data)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0
