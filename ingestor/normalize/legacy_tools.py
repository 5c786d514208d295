"""The legacy protocol's tool calls (`codex/event` and session-file events): file changes, MCP tool
calls and web searches, as begin/end events (0.63) or as completed turn items (0.169)."""

from __future__ import annotations

from typing import Any, Final

from ingestor.lines import Line
from ingestor.normalize import facts, tools
from ingestor.normalize.state import Ops, State
from ingestor.ops import CommandColumns

COMMAND_STATUS: Final = {"completed": "completed", "failed": "failed", "declined": "declined"}


def _str(value: Any) -> str | None:
    return value if type(value) is str else None


def duration_ms(value: Any) -> int | None:
    """Rust `Duration` as serde writes it (`{secs, nanos}`), or a plain number of milliseconds."""
    if type(value) is dict:
        secs, nanos = value.get("secs"), value.get("nanos", 0)
        if type(secs) is int and type(nanos) is int:
            return facts.integer(secs * 1000 + nanos // 1_000_000)
        return None
    return facts.integer(value)


CANONICAL_TOOLS: Final = frozenset({"FileChange", "McpToolCall", "WebSearch"})


def canonical_tool(item_type: str, item: dict[str, Any]) -> CommandColumns:
    """The columns of a 0.169 session file's `FileChange`, `McpToolCall` or `WebSearch` item."""
    fields: CommandColumns
    if item_type == "FileChange":
        fields = tools.file_fields(tools.keyed_changes(item.get("changes")))
        fields["stdout"] = _str(item.get("stdout"))
        fields["stderr"] = _str(item.get("stderr"))
        fields["aggregatedOutput"] = _joined(item.get("stdout"), item.get("stderr"))
    elif item_type == "McpToolCall":
        fields = tools.mcp_item_fields(item)
        fields["durationMs"] = duration_ms(item.get("duration"))
    else:
        fields = tools.search_fields(item.get("query"), item.get("action"))
    status = facts.lookup(COMMAND_STATUS, item.get("status"))
    fields["status"] = status if status is not None or item_type != "WebSearch" else "completed"
    return fields


def _joined(stdout: Any, stderr: Any) -> str | None:
    """A patch's output as one text (stdout, then stderr), as Codex shows it."""
    parts = [p for p in (_str(stdout), _str(stderr)) if p]
    return "".join(parts) if parts else _str(stdout)


def patch(
    s: State, line: Line, kind: str, msg: dict[str, Any], call_id: str, tid: str, at: int, out: Ops
) -> None:
    """`patch_apply_begin` / `patch_apply_end` (Codex 0.63): a file change."""
    fields = tools.file_fields(tools.keyed_changes(msg.get("changes")))
    if msg.get("type") == "patch_apply_begin":
        del fields["parsedCmd"]  # written once, by the end (see tools.py)
        fields["status"] = "running"
        fields["startedAt"] = at
    else:
        success = msg.get("success")
        fields["status"] = None if type(success) is not bool else "completed" if success else "failed"
        fields["stdout"] = _str(msg.get("stdout"))
        fields["stderr"] = _str(msg.get("stderr"))
        fields["aggregatedOutput"] = _joined(msg.get("stdout"), msg.get("stderr"))
        fields["endedAt"] = at
    facts.command(s, line, out, kind, call_id, tid, fields)


def mcp(
    s: State, line: Line, kind: str, msg: dict[str, Any], call_id: str, tid: str, at: int, out: Ops
) -> None:
    """`mcp_tool_call_begin` / `mcp_tool_call_end` (Codex 0.63): an MCP tool call. The end's
    `result` is Rust's `Result`: `{"Ok": CallToolResult}` or `{"Err": message}`."""
    invocation = msg.get("invocation")
    if type(invocation) is not dict:
        return
    server, tool, arguments = invocation.get("server"), invocation.get("tool"), invocation.get("arguments")
    if msg.get("type") == "mcp_tool_call_begin":
        fields = tools.mcp_fields(server, tool, arguments)
        del fields["parsedCmd"]  # written once, by the end (see tools.py)
        fields["status"] = "running"
        fields["startedAt"] = at
    else:
        outcome = msg.get("result")
        ok = outcome.get("Ok") if type(outcome) is dict else None
        err = outcome.get("Err") if type(outcome) is dict else None
        fields = tools.mcp_fields(server, tool, arguments, ok, err)
        failed = ok is None or tools.mcp_failed(ok)
        fields["status"] = "failed" if failed else "completed"
        fields["durationMs"] = duration_ms(msg.get("duration"))
        fields["endedAt"] = at
    facts.command(s, line, out, kind, call_id, tid, fields)


def web_search(
    s: State, line: Line, kind: str, msg: dict[str, Any], call_id: str, tid: str, at: int, out: Ops
) -> None:
    """`web_search_begin {call_id}` / `web_search_end {call_id, query, action?}`."""
    fields = tools.search_fields(msg.get("query"), msg.get("action"))
    if msg.get("type") == "web_search_begin":
        del fields["parsedCmd"]  # written once, by the end (see tools.py)
        fields["status"], fields["startedAt"] = "running", at
    else:
        fields["status"], fields["endedAt"] = "completed", at
    facts.command(s, line, out, kind, call_id, tid, fields)
