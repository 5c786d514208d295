"""`ingestor show`: read history back from a sink, for people (default) or machines (`--json`).

`--json` prints exactly what the `HistoryReader` returns (the shapes of the Convex history queries).
The human rendering is compact: one line per turn, message, command or event, output indented.
Stored text is whatever an agent or a command printed: in the human rendering, control characters
are shown escaped (`\x1b`), so that escape sequences (OSC 52 writes the clipboard, OSC 0 the window
title, CSI moves the cursor over what was shown) are seen, not obeyed by the terminal.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, TextIO

from ingestor.cli.show_calls import call_lines, call_title
from ingestor.errors import NotFoundError
from ingestor.sinks.base import HistoryReader

What = Literal["conversation", "turn", "command", "events"]
WHAT: Final[tuple[What, ...]] = ("conversation", "turn", "command", "events")

OUTPUT_LINES: Final = 40
"""Lines of command output shown per command in a turn (all of it with `show command`)."""
PAYLOAD_CHARS: Final = 160


# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides that reorder
# what a terminal shows.
_CONTROLS: Final = (
    *range(0x00, 0x09),
    *range(0x0B, 0x20),
    *range(0x7F, 0xA0),
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)
_ESCAPED: Final = str.maketrans({c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _CONTROLS})


def escape_controls(text: str) -> str:
    """`text` with every character that could drive a terminal written as an escape."""
    return text.translate(_ESCAPED)


def fmt_time(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return "?"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _span(row: dict[str, Any]) -> str:
    started, ended = row.get("startedAt"), row.get("endedAt")
    if ended is None:
        return f"{fmt_time(started)} -> ..."
    seconds = (ended - started) / 1000 if isinstance(started, (int, float)) else None
    took = f" ({seconds:.1f}s)" if seconds is not None else ""
    return f"{fmt_time(started)} -> {fmt_time(ended)}{took}"


def _fields(row: dict[str, Any], *names: str) -> str:
    return "  ".join(f"{name} {row[name]}" for name in names if row.get(name) is not None)


def _indent(text: str, prefix: str = "    | ", limit: int | None = None, more: str = "") -> list[str]:
    lines = text.rstrip("\n").split("\n")
    shown = lines if limit is None else lines[:limit]
    out = [prefix + line for line in shown]
    if len(shown) < len(lines):
        out.append(f"{prefix}... ({len(lines) - len(shown)} more lines{more})")
    return out


def render_conversation(data: dict[str, Any]) -> str:
    conversation, turns = data["conversation"], data["turns"]
    lines = [
        f"conversation {conversation['conversationId']}",
        "  " + _fields(conversation, "threadId", "modelProvider", "clientName", "forkedFromThreadId"),
        f"  started {fmt_time(conversation.get('startedAt'))}  "
        f"last seen {fmt_time(conversation.get('lastSeenAt'))}",
        f"  {len(turns)} turn(s)",
    ]
    for turn in turns:
        number = f"#{turn['turnNumber']} " if turn.get("turnNumber") is not None else ""
        lines.append(
            f"  turn {number}{turn['turnId']}  [{turn.get('status')}]  {_span(turn)}  "
            + _fields(turn, "model")
        )
        if turn.get("error"):
            lines.append(f"    error: {turn['error']}")
    return "\n".join(line.rstrip() for line in lines)


def _command_lines(command: dict[str, Any]) -> list[str]:
    argv = command.get("command") or []
    # shlex.join: the line pastes back into a shell as the same argv.
    lines = [
        call_title(command) or f"  $ {shlex.join(map(str, argv)) if argv else '(command unknown)'}",
        "    " + _fields(command, "callId", "status", "exitCode", "durationMs", "cwd"),
    ]
    output = command.get("aggregatedOutput") or command.get("stdout") or ""
    if command.get("stderr") and not command.get("aggregatedOutput"):
        output += command["stderr"]
    if output:
        more = f"; all of it: ingestor show command {shlex.quote(str(command.get('callId')))}"
        lines.extend(_indent(output, limit=OUTPUT_LINES, more=more))
    return lines


def _usage_line(usage: dict[str, Any]) -> str:
    return f"  {fmt_time(usage.get('capturedAt'))}  " + _fields(
        usage,
        "totalInputTokens",
        "cachedInputTokens",
        "outputTokens",
        "reasoningOutputTokens",
        "totalTokens",
        "modelContextWindow",
    )


def _rate_line(limit: dict[str, Any]) -> str:
    resets = f"  resets {fmt_time(limit['resetsAt'])}" if limit.get("resetsAt") is not None else ""
    return (
        f"  {fmt_time(limit.get('capturedAt'))}  {limit.get('scope')}  "
        + _fields(limit, "usedPercent", "windowMinutes", "balance", "unlimited", "hasCredits")
        + resets
    )


def _bullet(text: str) -> list[str]:
    """A reasoning section: its first line after a dash, the others indented under it."""
    first, *rest = text.rstrip("\n").split("\n")
    return [f"  - {first}", *(f"    {line}" for line in rest)]


def render_turn(data: dict[str, Any]) -> str:
    turn = data["turn"]
    lines = [
        f"turn {turn['turnId']}  [{turn.get('status')}]  conversation {turn.get('conversationId')}",
        f"  {_span(turn)}  " + _fields(turn, "model", "serviceTier", "turnNumber"),
    ]
    if turn.get("error"):
        lines.append(f"  error: {turn['error']}")
    sections: list[tuple[str, list[str]]] = [
        (
            "messages",
            [
                f"  [{fmt_time(m.get('createdAt'))}] {m.get('role')}: "
                + "\n      ".join(str(m.get("content", "")).split("\n"))
                for m in data["messages"]
            ],
        ),
        (
            "reasoning",
            [
                line
                for section in data["reasoningSections"]
                for text in section.get("summaryText") or []
                for line in _bullet(str(text))
            ],
        ),
        ("commands", [line for command in data["commands"] for line in _command_lines(command)]),
        ("usage", [_usage_line(u) for u in data["usageSnapshots"]]),
        ("rate limits", [_rate_line(r) for r in data["rateLimits"]]),
    ]
    for title, body in sections:
        if body:
            lines.append(f"{title}:")
            lines.extend(body)
    return "\n".join(line.rstrip() for line in lines)


def render_command_output(data: dict[str, Any]) -> str:
    """The whole output: the streamed chunks (or the command's final stdout and stderr), unless Codex
    reported a longer merged `aggregatedOutput` at the end (it skips streaming short commands and can
    miss the first delta): then that, said so."""
    lines = [f"command {data['callId']}  ({data['chunkCount']} chunk(s))"]
    lines.extend(call_lines(data.get("call")))
    streamed = (data.get("stdout") or "") + (data.get("stderr") or "")
    aggregated = data.get("aggregatedOutput") or ""
    if len(aggregated) > len(streamed):
        if data["chunkCount"]:
            lines.append(
                f"output (stdout and stderr merged, as Codex reported it at the end; the streamed "
                f"chunks hold only {len(streamed)} of its {len(aggregated)} characters):"
            )
        else:
            lines.append("output (stdout and stderr merged, as Codex reported it):")
        lines.extend(_indent(aggregated, prefix="  "))
        return "\n".join(lines)
    for stream in ("stdout", "stderr"):
        if data.get(stream):
            label = (
                "output (stdout and stderr merged)" if stream == "stdout" and data.get("merged") else stream
            )
            lines.append(f"{label}:")
            lines.extend(_indent(data[stream], prefix="  "))
    return "\n".join(lines)


def render_events(events: list[dict[str, Any]]) -> str:
    lines = []
    for event in events:
        payload = event.get("payload")
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":")) if payload is not None else ""
        if len(text) > PAYLOAD_CHARS:
            text = text[:PAYLOAD_CHARS] + "..."
        turn = f" [turn {event['turnId']}]" if event.get("turnId") else ""
        lines.append(f"{fmt_time(event.get('receivedAt'))}  {event.get('method')}{turn}  {text}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """`show events --turn ID --method PATTERN --tail N` (PATTERN: a method or a glob, `item/*`)."""

    turn: str | None = None
    method: str | None = None
    tail: int | None = None

    def __bool__(self) -> bool:
        return self.turn is not None or self.method is not None or self.tail is not None

    def apply(self, events: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
        kept = [
            event
            for event in events
            if (self.turn is None or event.get("turnId") == self.turn)
            and (self.method is None or fnmatch.fnmatchcase(str(event.get("method")), self.method))
        ]
        if limit is not None:
            kept = kept[:limit]
        return kept if self.tail is None else kept[-self.tail :]


async def fetch(
    reader: HistoryReader, what: What, ident: str, limit: int | None = None, events: EventFilter | None = None
) -> Any:
    """The query result for `what`; `NotFoundError` when the id is unknown."""
    result: Any
    if what == "conversation":
        result = await reader.get_conversation(ident)
    elif what == "turn":
        result = await reader.get_turn(ident)
    elif what == "command":
        result = await reader.get_command_output(ident)
    elif events:
        stored = await reader.list_events(ident)
        if not stored:
            raise NotFoundError(f"no events for conversation {ident!r}")
        return events.apply(stored, limit)
    else:
        result = await reader.list_events(ident, limit) or None
    if result is None:
        label = "events for conversation" if what == "events" else what
        raise NotFoundError(f"no {label} {ident!r}")
    return result


_RENDER: Final[dict[What, Callable[[Any], str]]] = {
    "conversation": render_conversation,
    "turn": render_turn,
    "command": render_command_output,
    "events": render_events,
}


async def show(
    reader: HistoryReader,
    what: What,
    ident: str,
    out: TextIO,
    *,
    as_json: bool = False,
    limit: int | None = None,
    events: EventFilter | None = None,
) -> None:
    result = await fetch(reader, what, ident, limit, events)
    if as_json:
        # The stdlib, not orjson: stored values may hold integers beyond 64 bits.
        out.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    else:
        out.write(escape_controls(_RENDER[what](result)) + "\n")
