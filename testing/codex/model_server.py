"""A scripted stand-in for the OpenAI Responses API, for running the real Codex CLI offline.

Codex is pointed at it through a custom model provider (see :func:`codex_config_toml`). Every
``POST /v1/responses`` pops the next :class:`Step` of the script and answers it as a
``text/event-stream``; a step is either a list of output items (reasoning summary, one shell call,
an assistant message) or an HTTP error, which makes the Codex turn fail when retries are disabled.

Usage::

    script = [Step([Reasoning("Plan"), Shell("echo hi")]), Step([Message("Done.")])]
    with ModelServer(script) as server:
        (codex_home / "config.toml").write_text(codex_config_toml(server.base_url))
        ...run codex...
    assert server.remaining == 0

Stdlib only, so any test (or a bare ``python``) can import it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = [
    "ApplyPatch",
    "HttpError",
    "McpCall",
    "Message",
    "ModelServer",
    "RateLimits",
    "Reasoning",
    "RecordedRequest",
    "Shell",
    "Step",
    "UpdatePlan",
    "Usage",
    "WebSearch",
    "codex_config_toml",
]

log = logging.getLogger("codex.model_server")

JSON = dict[str, Any]


@dataclass(frozen=True)
class Reasoning:
    """A reasoning item carrying summary parts (Codex shows these as reasoning summaries)."""

    summary: tuple[str, ...]

    def __init__(self, *summary: str) -> None:
        object.__setattr__(self, "summary", summary)


@dataclass(frozen=True)
class Shell:
    """A shell tool call. ``command`` is one bash script; it is sent in whichever shape the
    request's tool list asks for (``exec_command {"cmd"}`` or ``shell {"command": argv}``)."""

    command: str


@dataclass(frozen=True)
class Message:
    """A final assistant message."""

    text: str


@dataclass(frozen=True)
class ApplyPatch:
    """An ``apply_patch`` call (Codex offers it as a custom tool taking the patch text)."""

    patch: str


@dataclass(frozen=True)
class McpCall:
    """A call of a tool of a configured MCP server: 0.169 defers MCP tools behind a namespace
    (``{name: tool, namespace: "mcp__<server>"}``), 0.63 offers the flat ``mcp__<server>__<tool>``."""

    server: str
    tool: str
    arguments: JSON


@dataclass(frozen=True)
class SpawnAgent:
    """A ``spawn_agent`` call (0.169's ``multi_agent_v1`` tools): a sub-agent thread for ``message``;
    ``fork_context`` copies the current thread's history into it."""

    message: str
    fork_context: bool = False


@dataclass(frozen=True)
class UpdatePlan:
    """An ``update_plan`` call: ``plan`` is ``(step, status)`` pairs."""

    explanation: str
    plan: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class WebSearch:
    """A server-side web search (``web_search_call``): Codex makes no follow-up request for it, so
    the step that carries it must also carry the final message."""

    query: str


OutputItem = Reasoning | Shell | Message | ApplyPatch | McpCall | UpdatePlan | WebSearch | SpawnAgent


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 1000
    cached_input_tokens: int = 0
    output_tokens: int = 50
    reasoning_output_tokens: int = 0

    def to_json(self) -> JSON:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_input_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_output_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


@dataclass(frozen=True)
class RateLimits:
    """Values for the ``x-codex-{primary,secondary}-*`` response headers Codex turns into
    rate-limit snapshots. ``*_reset_at`` are unix seconds."""

    primary_used_percent: float = 12.5
    primary_window_minutes: int = 300
    primary_reset_at: int = 1_900_000_000
    secondary_used_percent: float = 40.0
    secondary_window_minutes: int = 10080
    secondary_reset_at: int = 1_900_500_000

    def headers(self) -> dict[str, str]:
        return {
            "x-codex-primary-used-percent": str(self.primary_used_percent),
            "x-codex-primary-window-minutes": str(self.primary_window_minutes),
            "x-codex-primary-reset-at": str(self.primary_reset_at),
            "x-codex-secondary-used-percent": str(self.secondary_used_percent),
            "x-codex-secondary-window-minutes": str(self.secondary_window_minutes),
            "x-codex-secondary-reset-at": str(self.secondary_reset_at),
        }


@dataclass(frozen=True)
class HttpError:
    """Answer the model call with this HTTP status instead of a stream."""

    status: int = 500
    message: str = "scripted model server failure"


@dataclass(frozen=True)
class Step:
    """One model call's answer. Codex 0.63 stalls on two function calls in one response, so a
    step should carry at most one :class:`Shell` (the server does not enforce it)."""

    items: Sequence[OutputItem] | HttpError
    usage: Usage = field(default_factory=Usage)
    rate_limits: RateLimits | None = field(default_factory=RateLimits)
    thread: int | None = None
    """Only for a request of this thread: the n-th thread (by the thread id the request names) to
    call the model. A sub-agent and its parent call it at once, in no fixed
    order; None: whichever request comes."""


@dataclass(frozen=True)
class RecordedRequest:
    """What Codex sent, kept so tests can check which tools a version offered."""

    path: str
    tool_names: tuple[str, ...]
    body: JSON


def codex_config_toml(base_url: str, *, model: str = "mock-model", extra: str = "") -> str:
    """A ``config.toml`` that routes Codex to ``base_url`` with no retries (so an HTTP 500 fails
    the turn at once), no sandbox and no approvals, and no update check (no network). ``extra``:
    more top-level keys or tables, appended."""
    return (
        f'model = "{model}"\n'
        'model_provider = "mock"\n'
        'approval_policy = "never"\n'
        'sandbox_mode = "danger-full-access"\n'
        "check_for_update_on_startup = false\n"
        'model_reasoning_summary = "detailed"\n'
        "\n"
        "[model_providers.mock]\n"
        'name = "mock"\n'
        f'base_url = "{base_url}"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
        "stream_idle_timeout_ms = 60000\n"
        f"{extra}"
    )


def _tool_names(body: JSON) -> tuple[str, ...]:
    names: list[str] = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            name = tool.get("name") or tool.get("type")
            if isinstance(name, str):
                names.append(name)
    return tuple(names)


def _shell_call(command: str, tools: Sequence[str]) -> tuple[str, JSON]:
    """Name and arguments for a shell call in the shape this Codex version offers."""
    if "exec_command" in tools:  # 0.169: unified exec, one script string
        return "exec_command", {"cmd": command}
    if "shell_command" in tools:  # some intermediate versions
        return "shell_command", {"command": command}
    # Older versions: argv, run without a login shell so profiles cannot add output.
    return "shell", {"command": ["bash", "-c", command]}


def _tool_call(item: Shell | ApplyPatch | McpCall | UpdatePlan | SpawnAgent, tools: Sequence[str]) -> JSON:
    """The output item of a tool call, without its ids."""
    if isinstance(item, SpawnAgent):
        arguments = {"message": item.message, "fork_context": item.fork_context}
        return {"type": "function_call", "name": "spawn_agent", "namespace": "multi_agent_v1",
                "arguments": json.dumps(arguments)}  # fmt: skip
    if isinstance(item, ApplyPatch):
        return {"type": "custom_tool_call", "name": "apply_patch", "input": item.patch}
    if isinstance(item, McpCall):
        flat = f"mcp__{item.server}__{item.tool}"
        call: JSON = {"type": "function_call", "arguments": json.dumps(item.arguments, ensure_ascii=False)}
        if flat in tools:
            return {**call, "name": flat}
        return {**call, "name": item.tool, "namespace": f"mcp__{item.server}"}
    if isinstance(item, UpdatePlan):
        plan = [{"step": step, "status": status} for step, status in item.plan]
        arguments = {"explanation": item.explanation, "plan": plan}
        return {"type": "function_call", "name": "update_plan", "arguments": json.dumps(arguments)}
    name, args = _shell_call(item.command, tools)
    return {"type": "function_call", "name": name, "arguments": json.dumps(args)}


def _thread_key(body: JSON) -> Any:
    """Which thread a request is from: `client_metadata.thread_id` (a sub-agent forked with its
    parent's history shares the parent's `prompt_cache_key`), else `prompt_cache_key`."""
    metadata = body.get("client_metadata")
    if isinstance(metadata, dict) and metadata.get("thread_id") is not None:
        return metadata["thread_id"]
    return body.get("prompt_cache_key")


def _sse(event: JSON) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        # Newer versions may list models from the provider; an empty list keeps them on config.
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, "application/json", b'{"object":"list","data":[],"models":[]}', {})
        else:
            self._send(404, "application/json", b'{"error":{"message":"not found"}}', {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/responses"):
            self._send(404, "application/json", b'{"error":{"message":"not found"}}', {})
            return
        try:
            body: JSON = json.loads(raw)
        except ValueError:
            body = {}
        status, content_type, payload, headers = self.server.owner._answer(self.path, body)
        self._send(status, content_type, payload, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ModelServer


class ModelServer:
    """Serves ``script`` on 127.0.0.1 (free port) from a background thread."""

    def __init__(
        self, script: Iterable[Step], *, name: str = "script", side_answer: str | None = None
    ) -> None:
        self.name = name
        self._steps = list(script)
        # The interactive TUI asks for a task title on a request of its own, offering no tools: with
        # `side_answer` set, such requests get this message and leave the script alone.
        self._side_answer = side_answer
        self.side_requests = 0
        self._threads: list[Any] = []
        """The threads that called, in order (their ``prompt_cache_key``): see ``Step.thread``."""
        self._lock = threading.Lock()
        self._calls = 0
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("model server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._steps)

    def push(self, *steps: Step) -> None:
        """Append steps (e.g. before each turn when driving Codex interactively)."""
        with self._lock:
            self._steps.extend(steps)

    def start(self) -> ModelServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name=f"model-server-{self.name}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _answer(self, path: str, body: JSON) -> tuple[int, str, bytes, dict[str, str]]:
        tools = _tool_names(body)
        with self._lock:
            self.requests.append(RecordedRequest(path, tools, body))
            self._calls += 1
            call_no = self._calls
            if self._side_answer is not None and not tools:
                self.side_requests += 1
                step: Step | None = Step([Message(self._side_answer)], Usage(), rate_limits=None)
            else:
                step = self._next_step(_thread_key(body))
        log.info("[%s] model call %d, tools offered: %s", self.name, call_no, ", ".join(tools))
        if step is None:
            # Running off the end of the script is a test bug; fail the turn loudly.
            msg = f"[{self.name}] script exhausted at model call {call_no}"
            self.errors.append(msg)
            log.error(msg)
            return 500, "application/json", json.dumps({"error": {"message": msg}}).encode(), {}
        headers = step.rate_limits.headers() if step.rate_limits else {}
        if isinstance(step.items, HttpError):
            err = {"error": {"message": step.items.message, "type": "server_error"}}
            return step.items.status, "application/json", json.dumps(err).encode(), headers
        return 200, "text/event-stream", self._stream(call_no, step, tools), headers

    def _next_step(self, thread_key: Any) -> Step | None:
        """The first step this request may take (caller holds the lock)."""
        if thread_key not in self._threads:
            self._threads.append(thread_key)
        thread = self._threads.index(thread_key)
        for index, step in enumerate(self._steps):
            if step.thread is None or step.thread == thread:
                return self._steps.pop(index)
        return None

    def _stream(self, call_no: int, step: Step, tools: Sequence[str]) -> bytes:
        """SSE body in the order the real API uses: created, per item added/deltas/done, completed.
        Ids are derived from the call number so re-recordings are stable."""
        assert not isinstance(step.items, HttpError)
        resp_id = f"resp_{self.name}_{call_no:03d}"
        out: list[bytes] = [
            _sse({"type": "response.created", "response": {"id": resp_id, "status": "in_progress"}})
        ]
        for index, item in enumerate(step.items):
            item_id = f"{resp_id}_item{index}"
            done: JSON
            if isinstance(item, Reasoning):
                done = {
                    "type": "reasoning",
                    "id": f"rs_{item_id}",
                    "summary": [{"type": "summary_text", "text": text} for text in item.summary],
                }
                out.append(
                    _sse(
                        {
                            "type": "response.output_item.added",
                            "output_index": index,
                            "item": {**done, "summary": []},
                        }
                    )
                )
                for s_index, text in enumerate(item.summary):
                    common = {"item_id": done["id"], "output_index": index, "summary_index": s_index}
                    out.append(
                        _sse(
                            {
                                "type": "response.reasoning_summary_part.added",
                                **common,
                                "part": {"type": "summary_text", "text": ""},
                            }
                        )
                    )
                    out.append(
                        _sse({"type": "response.reasoning_summary_text.delta", **common, "delta": text})
                    )
                    out.append(_sse({"type": "response.reasoning_summary_text.done", **common, "text": text}))
            elif isinstance(item, Message):
                done = {
                    "type": "message",
                    "id": f"msg_{item_id}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": item.text, "annotations": []}],
                }
                out.append(
                    _sse(
                        {
                            "type": "response.output_item.added",
                            "output_index": index,
                            "item": {**done, "status": "in_progress", "content": []},
                        }
                    )
                )
                # Two deltas, so delta aggregation is exercised downstream.
                half = len(item.text) // 2
                for chunk in (item.text[:half], item.text[half:]):
                    if chunk:
                        out.append(
                            _sse(
                                {
                                    "type": "response.output_text.delta",
                                    "item_id": done["id"],
                                    "output_index": index,
                                    "content_index": 0,
                                    "delta": chunk,
                                }
                            )
                        )
            elif isinstance(item, WebSearch):
                done = {
                    "type": "web_search_call",
                    "id": f"ws_{item_id}",
                    "status": "completed",
                    "action": {"type": "search", "query": item.query},
                }
                out.append(
                    _sse(
                        {
                            "type": "response.output_item.added",
                            "output_index": index,
                            "item": {**done, "status": "in_progress"},
                        }
                    )
                )
            else:
                call = _tool_call(item, tools)
                done = {
                    **call,
                    "id": f"fc_{item_id}",
                    "call_id": f"call_{self.name}_{call_no:03d}_{index}",
                    "status": "completed",
                }
                empty = {"input": ""} if call["type"] == "custom_tool_call" else {"arguments": ""}
                out.append(
                    _sse(
                        {
                            "type": "response.output_item.added",
                            "output_index": index,
                            "item": {**done, **empty},
                        }
                    )
                )
            out.append(_sse({"type": "response.output_item.done", "output_index": index, "item": done}))
        out.append(
            _sse(
                {
                    "type": "response.completed",
                    "response": {"id": resp_id, "status": "completed", "usage": step.usage.to_json()},
                }
            )
        )
        return b"".join(out)
