"""`ingestor export conversation ID --format md|html|json`: one conversation as a transcript to share.

`gather` reads everything once through the `HistoryReader` (the conversation, every turn, every
tool call's whole output); `markdown` and `html` render it (pure: no I/O), `json` is the gathered
data itself. Inside a turn, messages, reasoning and tool calls come in the order they happened.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Final, Literal

from ingestor.cli.show_calls import parsed_call
from ingestor.cli.usage import increments
from ingestor.errors import NotFoundError
from ingestor.sinks.base import HistoryReader

Row = dict[str, Any]
Format = Literal["md", "html", "json"]
FORMATS: Final[tuple[Format, ...]] = ("md", "html", "json")


async def gather(reader: HistoryReader, conversation_id: str) -> Row:
    """`{conversation, turns: [getTurn result + outputs: {callId: getCommandOutput}]}`."""
    found = await reader.get_conversation(conversation_id)
    if found is None:
        raise NotFoundError(f"no conversation {conversation_id!r}")
    turns = []
    for summary in found["turns"]:
        turn = await reader.get_turn(summary["turnId"])
        if turn is None:  # turns are never deleted; a reader racing nothing but writes finds it
            continue
        outputs = {}
        for command in turn["commands"]:
            output = await reader.get_command_output(command["callId"])
            if output is not None:
                outputs[command["callId"]] = output
        turns.append({**turn, "outputs": outputs})
    return {"conversation": found["conversation"], "turns": turns}


Event = tuple[str, Row]
"""One thing that happened in a turn: ("message" | "reasoning" | "call", its row)."""


def timeline(turn: Row) -> list[Event]:
    """Messages, reasoning and tool calls of a turn in the order they happened (by their time;
    among equal times, reasoning before calls before messages, as an agent thinks, acts, then says)."""
    events: list[tuple[int, int, int, Event]] = []
    for i, row in enumerate(turn["reasoningSections"]):
        events.append((row.get("createdAt", 0), 0, i, ("reasoning", row)))
    for i, row in enumerate(turn["commands"]):
        events.append((row.get("startedAt", 0), 1, i, ("call", row)))
    for i, row in enumerate(turn["messages"]):
        # A user's prompt opens the turn whatever its time says.
        rank = -1 if row.get("role") == "user" else 2
        events.append((row.get("createdAt", 0) if rank > 0 else -1, rank, i, ("message", row)))
    return [event for *_, event in sorted(events, key=lambda e: e[:3])]


def turn_usage(data: Row) -> dict[str, tuple[int, int, int, int]]:
    """What each turn used (input, cached input, output, reasoning), counted as `ingestor usage` does."""
    conversation_id = data["conversation"]["conversationId"]
    rows = [
        {**row, "conversationId": conversation_id} for turn in data["turns"] for row in turn["usageSnapshots"]
    ]
    per_turn: dict[str, tuple[int, int, int, int]] = {}
    for inc in increments(rows):
        before = per_turn.get(inc.turn_id, (0, 0, 0, 0))
        per_turn[inc.turn_id] = (
            before[0] + inc.tokens[0],
            before[1] + inc.tokens[1],
            before[2] + inc.tokens[2],
            before[3] + inc.tokens[3],
        )
    return per_turn


Block = tuple[str, str, str]
"""(caption, text, language hint for a code block: "diff", "json" or "")."""


def call_parts(command: Row, output: Row | None) -> tuple[str, str, list[str], list[Block]]:
    """(kind, title, facts, blocks) of a tool call: a shell command's argv (shell-quoted) and output,
    a file change's diffs, an MCP call's arguments and result, a web search's query."""
    source = command.get("source")
    argv = [str(arg) for arg in command.get("command") or []]
    parsed = parsed_call(command) or {}
    facts = [
        f"{name} {command[name]}"
        for name in ("status", "exitCode", "durationMs")
        if command.get(name) is not None
    ]
    blocks: list[Block] = []
    if source == "file":
        changes = [c for c in parsed.get("changes") or [] if isinstance(c, dict)]
        title = ", ".join(_change_name(c) for c in changes) or " ".join(argv[1:])
        blocks.extend(
            (_change_name(c), str(c["diff"]), "diff") for c in changes if isinstance(c.get("diff"), str)
        )
        kind = "file change"
    elif source == "mcp":
        title = f"{parsed.get('server')}/{parsed.get('tool')}" if parsed else "/".join(argv[1:])
        for name in ("arguments", "result", "error"):
            if name in parsed:
                value = parsed[name]
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)
                blocks.append((name, text, "" if isinstance(value, str) else "json"))
        kind = "MCP call"
    elif source == "search":
        title = " ".join(argv[1:])
        kind = "web search"
    else:
        title = shlex.join(argv) if argv else "(command unknown)"
        kind = "command"
        if command.get("cwd"):
            facts.append(f"cwd {command['cwd']}")
    if source not in ("file", "mcp", "search") or (output and (output.get("stdout") or output.get("stderr"))):
        blocks.extend(output_blocks(command, output))
    return kind, title, facts, blocks


def output_blocks(command: Row, output: Row | None) -> list[Block]:
    """A call's whole output: the streamed or final stdout and stderr, or Codex's merged
    `aggregatedOutput` where that is longer (as `ingestor show command`)."""
    data = output or {
        "stdout": command.get("stdout") or "",
        "stderr": command.get("stderr") or "",
        "aggregatedOutput": command.get("aggregatedOutput"),
    }
    streamed = (data.get("stdout") or "") + (data.get("stderr") or "")
    aggregated = data.get("aggregatedOutput") or ""
    if len(aggregated) > len(streamed):
        return [("output (stdout and stderr merged)", aggregated, "")]
    blocks: list[Block] = []
    if data.get("stdout"):
        merged = data.get("merged")
        blocks.append(("output (stdout and stderr merged)" if merged else "stdout", data["stdout"], ""))
    if data.get("stderr"):
        blocks.append(("stderr", data["stderr"], ""))
    return blocks


def _change_name(change: Row) -> str:
    moved = f" -> {change['movePath']}" if change.get("movePath") else ""
    return f"{change.get('kind')} {change.get('path')}{moved}"


def usage_line(used: tuple[int, int, int, int] | None) -> str | None:
    if used is None:
        return None
    return (
        f"{used[0]:,} input tokens ({used[1]:,} cached), {used[2]:,} output ({used[3]:,} reasoning), "
        f"{used[0] + used[2]:,} in total"
    )
