"""A minimal MCP server over stdio (newline-delimited JSON-RPC), for recording Codex's MCP tool calls.

Codex starts it from ``config.toml`` (``[mcp_servers.fixture] command = "python3" args = [this file]``).
Stdlib only. Its tools cover what a store must keep losslessly:

- ``lookup``: its input schema has a ``$schema`` key and a non-ASCII property (``größe``), keys Convex
  forbids; it answers text content and ``structuredContent`` echoing the arguments;
- ``fail_tool``: answers a result with ``isError: true``;
- ``broken``: answers a JSON-RPC error instead of a result.
"""

from __future__ import annotations

import json
import sys
from typing import Any

SERVER = "fixture"
LOOKUP_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"key": {"type": "string"}, "größe": {"type": "integer"}},
    "required": ["key"],
}
TOOLS: list[dict[str, Any]] = [
    {"name": "lookup", "description": "Look a key up.", "inputSchema": LOOKUP_SCHEMA},
    {
        "name": "fail_tool",
        "description": "Always reports a tool error.",
        "inputSchema": {"type": "object", "properties": {"reason": {"type": "string"}}},
    },
    {
        "name": "broken",
        "description": "Always answers a JSON-RPC error.",
        "inputSchema": {"type": "object", "properties": {}},
    },
]
FAIL_TEXT = "fail_tool failed on purpose"
BROKEN_ERROR = {"code": -32000, "message": "broken tool: internal failure"}


def lookup_result(arguments: dict[str, Any]) -> dict[str, Any]:
    """What ``lookup`` answers (also used by the recorder to state the facts)."""
    return {
        "content": [{"type": "text", "text": f"value of {arguments.get('key')}: 42 ✓"}],
        "structuredContent": {"key": arguments.get("key"), "value": 42, "größe": arguments.get("größe")},
        "isError": False,
    }


def _answer(request: dict[str, Any]) -> dict[str, Any] | None:
    method, req_id = request.get("method"), request.get("id")
    if req_id is None:
        return None  # a notification (notifications/initialized ...)
    params = request.get("params") or {}
    if method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": SERVER, "version": "1.0.0"},
        }
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        name, arguments = params.get("name"), params.get("arguments") or {}
        if name == "lookup":
            result = lookup_result(arguments)
        elif name == "fail_tool":
            result = {"content": [{"type": "text", "text": FAIL_TEXT}], "isError": True}
        else:
            return {"jsonrpc": "2.0", "id": req_id, "error": BROKEN_ERROR}
    else:
        return {"jsonrpc": "2.0", "id": req_id, "error": {"code": -32601, "message": f"no {method}"}}
    return {"jsonrpc": "2.0", "id": req_id, "result": result}


def main() -> None:
    for raw in sys.stdin:
        try:
            request = json.loads(raw)
        except ValueError:
            continue
        reply = _answer(request) if isinstance(request, dict) else None
        if reply is not None:
            sys.stdout.write(json.dumps(reply, ensure_ascii=False) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
