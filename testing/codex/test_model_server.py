"""Self-test of the scripted model server (no Codex needed): `.venv/bin/pytest testing/codex`."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from testing.codex.model_server import (
    ApplyPatch,
    HttpError,
    McpCall,
    Message,
    ModelServer,
    RateLimits,
    Reasoning,
    Shell,
    Step,
    UpdatePlan,
    Usage,
    WebSearch,
)


def _post(base_url: str, tools: list[str]) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"tools": [{"type": "function", "name": n} for n in tools]}).encode()
    req = urllib.request.Request(f"{base_url}/responses", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]


def test_script_is_served_in_order_with_version_specific_shell_calls() -> None:
    script = [
        Step(
            [Reasoning("a", "b"), Shell("echo hi")], Usage(input_tokens=7), RateLimits(primary_used_percent=3)
        ),
        Step([Shell("ls")]),
        Step([Message("done")], rate_limits=None),
        Step(HttpError(500)),
    ]
    with ModelServer(script, name="t") as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        status, headers, raw = _post(server.base_url, ["exec_command", "write_stdin"])
        assert status == 200 and headers["Content-Type"] == "text/event-stream"
        assert headers["x-codex-primary-used-percent"] == "3"
        events = _events(raw)
        assert events[0]["type"] == "response.created"
        assert events[-1]["response"]["usage"]["input_tokens"] == 7
        done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
        assert [d["summary"][0]["text"] for d in done[:1]] == ["a"]
        assert (done[1]["name"], json.loads(done[1]["arguments"])) == ("exec_command", {"cmd": "echo hi"})

        _, _, raw = _post(server.base_url, ["shell"])
        call = next(e["item"] for e in _events(raw) if e["type"] == "response.output_item.done")
        assert (call["name"], json.loads(call["arguments"])) == ("shell", {"command": ["bash", "-c", "ls"]})

        _, headers, raw = _post(server.base_url, [])
        assert "x-codex-primary-used-percent" not in headers
        deltas = "".join(e["delta"] for e in _events(raw) if e["type"] == "response.output_text.delta")
        assert deltas == "done"

        assert _post(server.base_url, [])[0] == 500
        assert server.remaining == 0 and not server.errors
        assert _post(server.base_url, [])[0] == 500  # past the end of the script
        assert server.errors and next(r.tool_names for r in server.requests) == (
            "exec_command",
            "write_stdin",
        )


def test_other_tool_calls_in_the_shape_each_version_offers() -> None:
    script = [
        Step([ApplyPatch("*** Begin Patch\n*** End Patch\n")]),
        Step([McpCall("srv", "do", {"größe": 1})]),
        Step([McpCall("srv", "do", {})]),
        Step([UpdatePlan("why", (("a", "completed"),))]),
        Step([WebSearch("q"), Message("found")]),
    ]

    def done(tools: list[str]) -> list[dict[str, Any]]:
        _, _, raw = _post(server.base_url, tools)
        return [e["item"] for e in _events(raw) if e["type"] == "response.output_item.done"]

    with ModelServer(script, name="t") as server:
        patch = done(["apply_patch"])[0]
        assert (patch["type"], patch["name"], patch["input"]) == (
            "custom_tool_call",
            "apply_patch",
            "*** Begin Patch\n*** End Patch\n",
        )
        deferred = done(["tool_search"])[0]  # 0.169: MCP tools behind a namespace
        assert (deferred["name"], deferred["namespace"], json.loads(deferred["arguments"])) == (
            "do",
            "mcp__srv",
            {"größe": 1},
        )
        flat = done(["mcp__srv__do"])[0]  # 0.63: one flat function per MCP tool
        assert flat["name"] == "mcp__srv__do" and "namespace" not in flat
        plan = done(["update_plan"])[0]
        assert json.loads(plan["arguments"]) == {
            "explanation": "why",
            "plan": [{"step": "a", "status": "completed"}],
        }
        search, message = done(["web_search"])
        assert search["type"] == "web_search_call" and search["action"] == {"type": "search", "query": "q"}
        assert message["type"] == "message"
        assert server.remaining == 0 and not server.errors
