"""`codex app-server` v2 notifications (camelCase params), and the JSON-RPC responses worth a look."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any, Final

from ingestor.lines import Line
from ingestor.normalize import facts, tools, usage_facts
from ingestor.normalize.state import V2, Ops, State

Handler = Callable[[State, Line, dict[str, Any], int, Ops], None]

TURN_STATUS: Final = {
    "completed": "succeeded",
    "failed": "failed",
    "interrupted": "canceled",
    "inProgress": "running",
}
COMMAND_STATUS: Final = {
    "inProgress": "running",
    "completed": "completed",
    "failed": "failed",
    "declined": "declined",
}
V2_ENCODING: Final = "utf-8-merged"
"""v2 deltas are text (lossy UTF-8) with stdout and stderr merged: chunks hold its UTF-8 encoding."""


def split_command(command: Any) -> list[str] | None:
    """v2 and exec send one shell string: argv by shell rules, or the whole string when it won't split."""
    if type(command) is list:
        return [str(a) for a in command]
    if type(command) is not str:
        return None
    if len(command) > SPLIT_MAX_CHARS:
        return [command]
    argv = _SPLIT_MEMO.get(command)
    if argv is None:
        try:
            argv = shlex.split(command) or [command]
        except ValueError:
            argv = [command]
        if len(_SPLIT_MEMO) >= _SPLIT_MEMO_MAX:
            _SPLIT_MEMO.clear()
        _SPLIT_MEMO[command] = argv
    return list(argv)  # a copy: the memo must not share a list with an op


SPLIT_MAX_CHARS: Final = 16 * 1024
"""Longer commands are kept whole, unsplit: shlex takes about 1.3 s per MiB on the event loop (every
producer waits), and the memo below would hold each such string."""
_SPLIT_MEMO: Final[dict[str, list[str]]] = {}
"""shlex is slow and every command arrives at least twice (started, completed; v2 and legacy): a
memo only (same answer), bounded."""
_SPLIT_MEMO_MAX: Final = 1024


def thread_info(s: State, line: Line, thread: Any, at: int, out: Ops) -> None:
    """A thread object (thread/started, or a thread/start|resume response): its id and provider."""
    if type(thread) is not dict:
        return
    tid = thread.get("id")
    provider = thread.get("modelProvider")
    model = thread.get("model")
    if type(model) is str:
        s.model = model
    changed = False
    if type(tid) is str and tid != s.thread_id:
        s.enter_thread(tid)
        changed = True
    if facts.forked(s, thread.get("forkedFromId")):
        changed = True
    if type(provider) is str and provider != s.model_provider:
        s.model_provider = provider
        changed = True
    # The thread's own creation time (seconds): a replay keeps when the conversation began, since
    # the stores keep the earliest startedAt.
    created = facts.epoch_ms(thread.get("createdAt"))
    if changed or not s.conversation_announced or created is not None:
        facts.conversation(s, line, out, at, started_at=created)


def _thread_started(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    thread_info(s, line, params.get("thread"), at, out)


def _turn_of(s: State, params: dict[str, Any]) -> str | None:
    """The turn a notification is about: `turn.id` or `turnId`, else (Codex 0.63 sent no ids on item
    notifications) the current turn."""
    turn = params.get("turn")
    tid = turn.get("id") if type(turn) is dict else params.get("turnId")
    if type(tid) is str and tid:
        return facts.turn_key(s, tid)
    return s.turn_id


def _turn_started(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    turn = params.get("turn")
    tid = _turn_of(s, params)
    if tid is None or type(turn) is not dict:
        return
    facts.turn_started(s, line, out, tid, facts.epoch_ms(turn.get("startedAt")) or at)


def _turn_completed(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    turn = params.get("turn")
    tid = _turn_of(s, params)
    if tid is None or type(turn) is not dict:
        return
    status = facts.lookup(TURN_STATUS, turn.get("status")) or "succeeded"
    error = turn.get("error")
    message = error.get("message") if type(error) is dict else None
    # `completedAt` is whole seconds: the notification's own time (`emittedAtMs`), where it has one,
    # is when the turn ended to the millisecond (and never before it began).
    ended = at if s.last_at_is_codex else facts.epoch_ms(turn.get("completedAt")) or at
    if status == "running":
        facts.turn_seen(s, line, out, tid, at)
        return
    facts.turn_ended(s, line, out, tid, status, ended, message if type(message) is str else None)


def _thread_status(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    # turn/completed is sometimes never sent: the thread going idle (or into a system error) ends the
    # running turn. A late turn/completed still refines it (a failure or cancel replaces `succeeded`).
    status = params.get("status")
    kind = status.get("type") if type(status) is dict else status
    if s.turn_active and s.turn_id is not None and kind in ("idle", "systemError"):
        facts.turn_ended(s, line, out, s.turn_id, "succeeded" if kind == "idle" else "failed", at, None)


def _error(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    # The turn it names, or the running one: an error between turns must not fail the turn before.
    tid = _turn_of(s, params)
    if tid is None or ("turnId" not in params and not s.turn_active):
        return
    s.line_turn = tid
    if params.get("willRetry") is True:
        return
    error = params.get("error")
    message = error.get("message") if type(error) is dict else None
    facts.turn_ended(s, line, out, tid, "failed", at, message if type(message) is str else None)


def _text_of_user(item: dict[str, Any]) -> str:
    content = item.get("content")
    if type(content) is not list:
        return ""
    return "\n".join(
        part["text"]
        for part in content
        if type(part) is dict and part.get("type") == "text" and type(part.get("text")) is str
    )


def _item(s: State, line: Line, params: dict[str, Any], at: int, out: Ops, completed: bool) -> None:
    item = params.get("item")
    tid = _turn_of(s, params)
    if type(item) is not dict or tid is None:
        return
    facts.turn_seen(s, line, out, tid, at)
    kind = item.get("type")
    if kind == "commandExecution":
        call_id = item.get("id")
        if type(call_id) is not str:
            return
        fields: dict[str, Any] = {
            "command": split_command(item.get("command")),
            "cwd": item.get("cwd") if type(item.get("cwd")) is str else None,
            "source": facts.COMMAND_SOURCE,
            "parsedCmd": item.get("commandActions"),
            "status": facts.lookup(COMMAND_STATUS, item.get("status")),
            "exitCode": facts.integer(item.get("exitCode")),
            "durationMs": facts.number(item.get("durationMs")),
            # An in-progress item's output is partial (often ""): only the final one is stored, so a
            # late or replayed start can't overwrite it.
            "aggregatedOutput": item.get("aggregatedOutput")
            if completed and type(item.get("aggregatedOutput")) is str
            else None,
        }
        if completed:
            fields["endedAt"] = facts.epoch_ms(params.get("completedAtMs")) or at
        else:
            fields["startedAt"] = facts.epoch_ms(params.get("startedAtMs")) or at
        facts.command(s, line, out, V2, call_id, tid, fields)
    elif type(kind) is str and kind in _TOOL_ITEMS:
        _tool_item(s, line, params, item, tid, completed, at, out)
    elif not completed:
        return
    elif kind == "agentMessage":
        text = item.get("text")
        if type(text) is str:
            facts.message(s, line, out, V2, tid, "assistant", text, item, at)
    elif kind == "userMessage":
        facts.message(s, line, out, V2, tid, "user", _text_of_user(item), item, at)
    elif kind == "reasoning":
        summary = item.get("summary")
        texts = [t for t in summary if type(t) is str] if type(summary) is list else []
        item_id = item.get("id")
        s.reasoning_items = True
        facts.reasoning(s, line, out, V2, tid, item_id if type(item_id) is str else None, texts, item, at)


_TOOL_ITEMS: Final = frozenset({"fileChange", "mcpToolCall", "webSearch"})


def _tool_item(
    s: State,
    line: Line,
    params: dict[str, Any],
    item: dict[str, Any],
    tid: str,
    completed: bool,
    at: int,
    out: Ops,
) -> None:
    """A file change, MCP tool call or web search item (see tools.py)."""
    call_id = item.get("id")
    if type(call_id) is not str:
        return
    kind = item.get("type")
    fields: dict[str, Any]
    if kind == "fileChange":
        fields = tools.file_fields(tools.v2_changes(item.get("changes")))
    elif kind == "mcpToolCall":
        fields = tools.mcp_item_fields(item)
        fields["durationMs"] = facts.number(item.get("durationMs"))
    else:
        fields = tools.search_fields(item.get("query"), item.get("action"))
    status = facts.lookup(COMMAND_STATUS, item.get("status"))
    if status is None:  # webSearch items have no status: started runs, completed is done
        status = "completed" if completed else "running"
    fields["status"] = status
    if completed:
        fields["endedAt"] = facts.epoch_ms(item.get("completedAtMs") or params.get("completedAtMs")) or at
    else:
        del fields["parsedCmd"]  # written once, by the completed item (see tools.py)
        fields["startedAt"] = facts.epoch_ms(item.get("startedAtMs") or params.get("startedAtMs")) or at
    facts.command(s, line, out, V2, call_id, tid, fields)


def _item_started(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    _item(s, line, params, at, out, False)


def _item_completed(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    _item(s, line, params, at, out, True)


def _output_delta(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    call_id = params.get("itemId")
    tid = _turn_of(s, params)
    delta = params.get("delta")
    if type(call_id) is not str or tid is None or type(delta) is not str:
        return
    s.line_turn = tid
    data = delta.encode("utf-8", "surrogatepass")
    facts.chunk(s, line, out, V2, call_id, tid, "stdout", data, V2_ENCODING, at)


def _plan_updated(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    tid = _turn_of(s, params)
    if tid is None:
        return
    facts.turn_seen(s, line, out, tid, at)
    tools.plan_message(
        s, line, out, V2, tid, params.get("explanation"), tools.plan_steps(params.get("plan")), at
    )


def _token_usage(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    usage = params.get("tokenUsage")
    if type(usage) is not dict:
        return
    totals = _usage_totals(usage.get("total"))
    if totals is None:
        return
    last = _usage_totals(usage.get("last"))
    if usage_facts.fork_base(s, line, out, totals, last, at):
        return  # the parent's totals told again on the fork, naming the parent's turn: not the fork's
    tid = _turn_of(s, params)
    if tid is None:
        return
    facts.turn_seen(s, line, out, tid, at)
    restarted = usage_facts.counts_from_zero(totals, last)
    usage_facts.usage(s, line, out, V2, tid, totals, usage.get("modelContextWindow"), at, restarted)


def _usage_totals(counts: Any) -> usage_facts.UsageTotals | None:
    if type(counts) is not dict:
        return None
    return (
        counts.get("inputTokens"),
        counts.get("cachedInputTokens"),
        counts.get("outputTokens"),
        counts.get("reasoningOutputTokens"),
        counts.get("totalTokens"),
    )


def _v2_window(position: str, window: Any) -> dict[str, Any] | None:
    if type(window) is not dict:
        return None
    return usage_facts.window_row(
        position,
        window.get("usedPercent"),
        window.get("windowDurationMins"),
        facts.epoch_ms(window.get("resetsAt")),
    )


def _rate_limits(s: State, line: Line, params: dict[str, Any], at: int, out: Ops) -> None:
    snap = params.get("rateLimits")
    if type(snap) is not dict:
        return
    rows = [
        r
        for r in (
            _v2_window("primary", snap.get("primary")),
            _v2_window("secondary", snap.get("secondary")),
            usage_facts.credits_row(snap.get("credits")),
        )
        if r is not None
    ]
    usage_facts.rate_limits(s, line, out, V2, rows, _turn_of(s, params), at)


HANDLERS: Final[dict[str, Handler]] = {
    "thread/started": _thread_started,
    "turn/started": _turn_started,
    "turn/completed": _turn_completed,
    "thread/status/changed": _thread_status,
    "error": _error,
    "item/started": _item_started,
    "item/completed": _item_completed,
    "item/commandExecution/outputDelta": _output_delta,
    "turn/plan/updated": _plan_updated,
    "thread/tokenUsage/updated": _token_usage,
    "account/rateLimits/updated": _rate_limits,
}


def handle(s: State, line: Line, method: str, obj: dict[str, Any], out: Ops) -> None:
    handler = HANDLERS.get(method)
    params = obj.get("params")
    if type(params) is not dict:
        return
    if s.saw_legacy and "threadId" not in params and method != "thread/started":
        # Codex 0.63 sent every fact twice: as a legacy event naming its thread and turn, and as a v2
        # notification naming neither. With several threads on a connection the v2 copy can't be
        # attributed, and the legacy copy says it all, so the anonymous twin is kept raw only.
        return
    if handler is None:
        tid = params.get("turnId")
        if type(tid) is str and tid:
            s.line_turn = facts.turn_key(s, tid)
        return
    handler(s, line, params, s.last_at, out)


def handle_response(s: State, line: Line, obj: dict[str, Any], out: Ops) -> None:
    """Responses are raw events; a thread/start|resume result also tells the thread and the model."""
    result = obj.get("result")
    if type(result) is not dict:
        return
    model = result.get("model")
    if type(model) is str:
        s.model = model
    tier = result.get("serviceTier")
    if type(tier) is str:
        s.service_tier = tier
    if "thread" in result:
        thread_info(s, line, result["thread"], s.last_at, out)
