"""Codex core events (snake_case `msg` objects), wherever they come from:

- `codex/event/<type>` notifications `{"params": {"id": <submission id>, "msg", "conversationId"}}`,
  sent by app-server beside the v2 notifications up to early 2026;
- older `{"id", "msg"}` lines;
- session files' `event_msg` payloads (no submission id there).

Turn ids: the event's `turn_id` when Codex gives one, else the submission id of `task_started`
(app-server uses that same submission id as the v2 turn id, so both copies land on one turn row),
else (old session files) a derived id, see `facts.next_derived_turn`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote

from ingestor.lines import Line
from ingestor.normalize import facts, tools, usage_facts
from ingestor.normalize.legacy_tools import (
    CANONICAL_TOOLS,
    COMMAND_STATUS,
    canonical_tool,
    duration_ms,
    mcp,
    patch,
    web_search,
)
from ingestor.normalize.state import Ops, State

Handler = Callable[[State, Line, str, dict[str, Any], str | None, int, Ops], None]
"""(state, line, kind, msg, submission id, time, out)."""

RAW_ENCODING: Final = "raw"
"""Legacy deltas carry the exact bytes of one stream."""


def _str(value: Any) -> str | None:
    return value if type(value) is str else None


def _int(value: Any) -> int | None:
    return facts.integer(value)


def _submission_turn(s: State, sub_id: str | None) -> bool:
    """Whether the event's submission id names its turn: a turn this stream saw start, or any (a
    stream that began in the middle of a turn) while it has seen none."""
    return sub_id is not None and (sub_id in s.turn_started_at or s.turn_id is None)


def _turn(s: State, msg: dict[str, Any], sub_id: str | None) -> str | None:
    """The turn an event belongs to: its own turn_id, its submission's turn, else the current turn."""
    tid = msg.get("turn_id")
    if type(tid) is str and tid:
        return facts.turn_key(s, tid)
    if _submission_turn(s, sub_id):
        return sub_id
    return s.turn_id


def _task_started(
    s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
) -> None:
    own = _str(msg.get("turn_id"))
    s.explicit_turns = True
    tid = facts.turn_key(s, own) if own else sub_id or facts.next_derived_turn(s)
    facts.turn_started(s, line, out, tid, at)


def _ended(status: str) -> Handler:
    def handler(
        s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
    ) -> None:
        # Only the turn the event names, or one still running: an error between turns must not fail
        # the turn before it.
        tid = _turn(s, msg, sub_id)
        named = "turn_id" in msg or _submission_turn(s, sub_id)
        if tid is None or not (named or s.turn_active):
            return
        outcome, error = status, _str(msg.get("message")) if status == "failed" else None
        # Newer Codex ends a failed turn with task_complete carrying the error.
        failure = msg.get("error")
        if type(failure) is dict and status == "succeeded":
            outcome, error = "failed", _str(failure.get("message"))
        facts.turn_ended(s, line, out, tid, outcome, _end_time(s, tid, msg, at), error)

    return handler


def _end_time(s: State, tid: str, msg: dict[str, Any], at: int) -> int:
    """When a turn ended, as precisely as the event says: `completed_at_ms`, else the line's own time
    (a session file's millisecond `timestamp`), else `completed_at` (whole seconds, which put 0.169's
    turn ends before their starts) or when the line arrived; never before the turn's known start.
    Not the start plus `duration_ms`: a process that begins mid-thread knows no start, and the end
    must not depend on where the stream began."""
    ended = facts.epoch_ms(msg.get("completed_at_ms"))
    if ended is None:
        ended = at if s.last_at_is_codex else facts.epoch_ms(msg.get("completed_at")) or at
    started = s.turn_started_at.get(tid)
    return ended if started is None else max(ended, started)


def _session_configured(
    s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
) -> None:
    model = _str(msg.get("model"))
    if model is not None:
        s.model = model
    thread = _str(msg.get("session_id"))
    if thread is not None and s.thread_id is None:
        s.enter_thread(thread)
        facts.conversation(s, line, out, at)


CallHandler = Callable[[State, Line, str, dict[str, Any], str, str, int, Ops], None]
"""(state, line, kind, msg, call id, turn, time, out)."""


def _tool_call(handler: CallHandler) -> Handler:
    """A handler of a tool call's events: the call id and turn read, the turn recorded, first."""

    def handle(
        s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
    ) -> None:
        call_id = _str(msg.get("call_id"))
        tid = _turn(s, msg, sub_id)
        if call_id is None or tid is None:
            return
        facts.turn_seen(s, line, out, tid, at)
        handler(s, line, kind, msg, call_id, tid, at, out)

    return handle


def _exec_begin(
    s: State, line: Line, kind: str, msg: dict[str, Any], call_id: str, tid: str, at: int, out: Ops
) -> None:
    argv = msg.get("command")
    fields = {
        "command": [str(a) for a in argv] if type(argv) is list else None,
        "cwd": _str(msg.get("cwd")),
        "parsedCmd": msg.get("parsed_cmd"),
        "source": facts.COMMAND_SOURCE,
        "status": "running",
        "startedAt": facts.epoch_ms(msg.get("started_at_ms")) or at,
    }
    facts.command(s, line, out, kind, call_id, tid, fields)


def chunk_bytes(chunk: Any) -> bytes | None:
    """A legacy output chunk: base64 text (current) or an array of byte values (before Sept 2025)."""
    if type(chunk) is str:
        try:
            return base64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError):
            return chunk.encode("utf-8", "surrogatepass")
    if type(chunk) is list:
        try:
            return bytes(chunk)
        except (TypeError, ValueError):
            return None
    return None


def _exec_delta(
    s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
) -> None:
    call_id = _str(msg.get("call_id"))
    tid = _turn(s, msg, sub_id)
    data = chunk_bytes(msg.get("chunk"))
    if call_id is None or tid is None or data is None:
        return
    s.line_turn = tid
    stream = msg.get("stream")
    facts.chunk(
        s, line, out, kind, call_id, tid, stream if stream == "stderr" else "stdout", data, RAW_ENCODING, at
    )


def _exec_end(
    s: State, line: Line, kind: str, msg: dict[str, Any], call_id: str, tid: str, at: int, out: Ops
) -> None:
    exit_code = _int(msg.get("exit_code"))
    status = facts.lookup(COMMAND_STATUS, msg.get("status"))
    if status is None and exit_code is not None:
        status = "completed" if exit_code == 0 else "failed"
    argv = msg.get("command")
    fields = {
        "command": [str(a) for a in argv] if type(argv) is list else None,
        "cwd": _str(msg.get("cwd")),
        "status": status,
        "exitCode": exit_code,
        "durationMs": duration_ms(msg.get("duration")),
        "stdout": _str(msg.get("stdout")),
        "stderr": _str(msg.get("stderr")),
        "aggregatedOutput": _str(msg.get("aggregated_output")),
        "endedAt": facts.epoch_ms(msg.get("completed_at_ms")) or at,
    }
    facts.command(s, line, out, kind, call_id, tid, fields)


def _usage_totals(msg: dict[str, Any]) -> tuple[usage_facts.UsageTotals, Any] | None:
    info = msg.get("info")
    if type(info) is dict:
        total = info.get("total_token_usage")
        window = info.get("model_context_window")
    elif "input_tokens" in msg:  # Aug 2025: the totals flat in the event
        total, window = msg, msg.get("model_context_window")
    else:
        return None
    totals = _counts(total)
    return None if totals is None else (totals, window)


def _last_call_totals(msg: dict[str, Any]) -> usage_facts.UsageTotals | None:
    info = msg.get("info")
    return _counts(info.get("last_token_usage")) if type(info) is dict else None


def _counts(usage: Any) -> usage_facts.UsageTotals | None:
    if type(usage) is not dict:
        return None
    return (
        usage.get("input_tokens"),
        usage.get("cached_input_tokens"),
        usage.get("output_tokens"),
        usage.get("reasoning_output_tokens"),
        usage.get("total_tokens"),
    )


def _window(position: str, window: Any, at: int) -> dict[str, Any] | None:
    if type(window) is not dict:
        return None
    resets = facts.epoch_ms(window.get("resets_at"))
    relative = window.get("resets_in_seconds")
    seconds = facts.number(relative)
    used, minutes = window.get("used_percent"), window.get("window_minutes")
    if resets is not None or seconds is None:
        return usage_facts.window_row(position, used, minutes, resets)
    row = usage_facts.window_row(position, used, minutes, facts.integer(at + int(seconds * 1000)))
    row[usage_facts.RESETS_IN] = seconds
    return row


def _token_count(
    s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
) -> None:
    tid = _turn(s, msg, sub_id)
    found = _usage_totals(msg)
    last = _last_call_totals(msg)
    if found is not None and usage_facts.fork_base(s, line, out, found[0], last, at):
        found = None  # only the parent's totals, told before the fork's first turn
    if found is not None:
        if tid is not None:
            facts.turn_seen(s, line, out, tid, at)
        restarted = usage_facts.counts_from_zero(found[0], last)
        usage_facts.usage(s, line, out, kind, tid, found[0], found[1], at, restarted)
    limits = msg.get("rate_limits")
    if type(limits) is dict:
        rows = [
            r
            for r in (
                _window("primary", limits.get("primary"), at),
                _window("secondary", limits.get("secondary"), at),
                usage_facts.credits_row(limits.get("credits")),
            )
            if r is not None
        ]
        usage_facts.rate_limits(s, line, out, kind, rows, tid, at)


def _agent_message(
    s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
) -> None:
    tid = _turn(s, msg, sub_id)
    text = _str(msg.get("message"))
    if tid is not None and text is not None:
        facts.turn_seen(s, line, out, tid, at)
        facts.message(s, line, out, kind, tid, "assistant", text, msg, at)
        s.turn_replied = True


def _user_message(
    s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
) -> None:
    # Older Codex also sent its injected context (instructions, environment) as user_message with a
    # `kind`; only what the user typed is a chat message.
    if msg.get("kind") not in (None, "plain"):
        return
    tid = _turn(s, msg, sub_id)
    text = _str(msg.get("message"))
    if tid is not None and text is not None:
        facts.turn_seen(s, line, out, tid, at)
        facts.message(s, line, out, kind, tid, "user", text, msg, at)


def _agent_reasoning(
    s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
) -> None:
    # One event per summary section; where reasoning also arrives as whole items (v2 item/completed,
    # legacy item_completed: both came first in every recording) the items are the rows.
    if s.reasoning_items:
        return
    tid = _turn(s, msg, sub_id)
    text = _str(msg.get("text"))
    if tid is not None and text is not None:
        facts.turn_seen(s, line, out, tid, at)
        facts.reasoning(s, line, out, kind, tid, None, [text], msg, at)


def file_path(value: Any) -> str | None:
    """Newer Codex writes some paths as `file://` URLs: store the path, as v2 sends it."""
    if type(value) is not str:
        return None
    return unquote(value[7:]) if value.startswith("file://") else value


def _texts(content: Any, part_type: str) -> list[str]:
    if type(content) is not list:
        return []
    return [
        p["text"]
        for p in content
        if type(p) is dict and p.get("type") == part_type and type(p.get("text")) is str
    ]


def _item_completed(
    s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
) -> None:
    """Turn items as core events (`item_completed`): the only record of messages and commands in newer
    session files. They are counted as their own family, beside agent_message & co (see facts.message)."""
    item = msg.get("item")
    tid = _turn(s, msg, sub_id)
    if type(item) is not dict or tid is None:
        return
    facts.turn_seen(s, line, out, tid, at)
    family = kind + "/item"
    item_type = item.get("type")
    item_id = _str(item.get("id"))
    if item_type == "UserMessage":
        facts.message(
            s, line, out, family, tid, "user", "\n".join(_texts(item.get("content"), "text")), item, at
        )
    elif item_type == "AgentMessage":
        text = "".join(_texts(item.get("content"), "Text"))
        facts.message(s, line, out, family, tid, "assistant", text, item, at)
        s.turn_replied = True
    elif item_type == "Reasoning":
        summary = item.get("summary_text")
        texts = [t for t in summary if type(t) is str] if type(summary) is list else []
        s.reasoning_items = True
        facts.reasoning(s, line, out, family, tid, item_id, texts, item, at)
    elif item_type == "CommandExecution" and item_id is not None:
        exit_code = _int(item.get("exit_code"))
        argv = item.get("command")
        fields = {
            "command": [str(a) for a in argv] if type(argv) is list else None,
            "cwd": file_path(item.get("cwd")),
            "parsedCmd": item.get("parsed_cmd"),
            "source": facts.COMMAND_SOURCE,
            "status": facts.lookup(COMMAND_STATUS, item.get("status")),
            "exitCode": exit_code,
            "durationMs": duration_ms(item.get("duration")),
            "aggregatedOutput": _str(item.get("aggregated_output")),
            "startedAt": facts.epoch_ms(msg.get("started_at_ms")),
            "endedAt": facts.epoch_ms(msg.get("completed_at_ms")) or at,
        }
        facts.command(s, line, out, kind, item_id, tid, fields)
    elif type(item_type) is str and item_type in CANONICAL_TOOLS and item_id is not None:
        fields = canonical_tool(item_type, item)
        fields["startedAt"] = facts.epoch_ms(msg.get("started_at_ms"))
        fields["endedAt"] = facts.epoch_ms(msg.get("completed_at_ms")) or at
        facts.command(s, line, out, kind, item_id, tid, fields)


def _plan_update(
    s: State, line: Line, kind: str, msg: dict[str, Any], sub_id: str | None, at: int, out: Ops
) -> None:
    tid = _turn(s, msg, sub_id)
    if tid is None:
        return
    facts.turn_seen(s, line, out, tid, at)
    tools.plan_message(s, line, out, kind, tid, msg.get("explanation"), tools.plan_steps(msg.get("plan")), at)


HANDLERS: Final[dict[str, Handler]] = {
    "item_completed": _item_completed,
    "session_configured": _session_configured,
    "task_started": _task_started,
    "turn_started": _task_started,
    "task_complete": _ended("succeeded"),
    "turn_complete": _ended("succeeded"),
    "turn_aborted": _ended("canceled"),
    "error": _ended("failed"),
    "exec_command_begin": _tool_call(_exec_begin),
    "exec_command_output_delta": _exec_delta,
    "exec_command_end": _tool_call(_exec_end),
    "patch_apply_begin": _tool_call(patch),
    "patch_apply_end": _tool_call(patch),
    "mcp_tool_call_begin": _tool_call(mcp),
    "mcp_tool_call_end": _tool_call(mcp),
    "web_search_begin": _tool_call(web_search),
    "web_search_end": _tool_call(web_search),
    "plan_update": _plan_update,
    "token_count": _token_count,
    "agent_message": _agent_message,
    "user_message": _user_message,
    "agent_reasoning": _agent_reasoning,
}


def handle(s: State, line: Line, kind: str, msg: Any, sub_id: Any, at: int, out: Ops) -> None:
    if type(msg) is not dict:
        return
    msg_type = msg.get("type")
    handler = HANDLERS.get(msg_type) if type(msg_type) is str else None
    sub = facts.turn_key(s, sub_id) if type(sub_id) is str and sub_id else None
    if handler is None:
        own = _str(msg.get("turn_id"))
        s.line_turn = facts.turn_key(s, own) if own else s.line_turn
        return
    handler(s, line, kind, msg, sub, at, out)
