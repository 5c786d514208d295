"""How `ingestor show` renders tool calls that are not shell commands (`commands.source` file, mcp,
search): a title line for `show turn`, and the call's detail (a file change's diffs, an MCP call's
arguments and result) for `show command`. The row shapes are `ingestor/normalize/tools.py`'s."""

from __future__ import annotations

import json
import shlex
from typing import Any


def parsed_call(row: dict[str, Any]) -> dict[str, Any] | None:
    """The row's `parsedCmd`, also when it came back as JSON text (`parsedCmdJson`: keys Convex
    cannot hold, such as an MCP argument named `größe`)."""
    parsed = row.get("parsedCmd")
    if parsed is None and isinstance(row.get("parsedCmdJson"), str):
        parsed = json.loads(row["parsedCmdJson"])
    return parsed if isinstance(parsed, dict) else None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def call_title(row: dict[str, Any]) -> str | None:
    """One line naming a file change, MCP call or web search; None for a shell command."""
    source = row.get("source")
    argv = row.get("command") or []
    parsed = parsed_call(row) or {}
    if source == "file":
        changes = parsed.get("changes")
        if isinstance(changes, list) and changes:
            return "  [file] " + ", ".join(_change_name(c) for c in changes if isinstance(c, dict))
        return "  [file] " + " ".join(map(str, argv[1:]))
    if source == "mcp":
        target = f"{parsed.get('server')}/{parsed.get('tool')}" if parsed else "/".join(map(str, argv[1:]))
        arguments = f" {json.dumps(parsed['arguments'], ensure_ascii=False)}" if "arguments" in parsed else ""
        return f"  [mcp] {target}{arguments}"
    if source == "search":
        return "  [search] " + " ".join(map(str, argv[1:]))
    return None


def _change_name(change: dict[str, Any]) -> str:
    moved = f" -> {change['movePath']}" if change.get("movePath") else ""
    return f"{change.get('kind')} {change.get('path')}{moved}"


def call_lines(call: dict[str, Any] | None) -> list[str]:
    """`show command`'s view of the call the output belongs to: argv, then for a file change every
    change with its diff, for an MCP call its arguments and result (or error)."""
    if not call:
        return []
    argv = call.get("command") or []
    lines = [f"{call.get('source', 'command')}: {shlex.join(map(str, argv))}"]
    parsed = parsed_call(call)
    if parsed is None:
        return lines
    if call.get("source") == "file":
        for change in parsed.get("changes") or []:
            lines.append(_change_name(change) + ":")
            if isinstance(change.get("diff"), str):
                lines.extend("  " + line for line in change["diff"].rstrip("\n").split("\n"))
    elif call.get("source") == "mcp":
        for name in ("arguments", "result", "error"):
            if name in parsed:
                lines.append(f"{name}:")
                text = parsed[name] if isinstance(parsed[name], str) else _json(parsed[name])
                lines.extend("  " + line for line in text.split("\n"))
    elif call.get("source") == "search" and "action" in parsed:
        lines.append("action: " + json.dumps(parsed["action"], ensure_ascii=False))
    return lines
