"""Codex session files (`$CODEX_HOME/sessions/.../rollout-*.jsonl`): `{"timestamp", "type", "payload"}`.

- `session_meta`: the thread id (`payload.id`), provider and originator (kept as the client name);
- `turn_context`: the model of the turns that follow;
- `event_msg`: a core event (see legacy.py); its time is the line's `timestamp`, so a replay of an old
  file stores when things happened, not when the file was read;
- `response_item` (the model transcript): the messages in it also arrive as `event_msg`, so they are
  raw only; but tool calls are recorded here (Codex 0.63 recorded them only here): `function_call`
  (shell tools, MCP tools), `custom_tool_call` (`apply_patch`) and their outputs, `web_search_call`.

Codex 0.63 session files have no turn events at all: there, each `user_message` starts a turn (with a
derived id), which ends at the next one or at the end of the file, `succeeded` when it produced an
assistant message and `failed` otherwise (a failed turn leaves nothing else behind).
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from ingestor.lines import Line
from ingestor.normalize import facts, legacy, tools
from ingestor.normalize.app_server import split_command
from ingestor.normalize.parse_cost import too_costly_to_parse
from ingestor.normalize.state import MAX_ID_CHARS, SESSION, Ops, State
from ingestor.ops import CommandColumns

NO_REPLY: Final = "no reply recorded in the session file"


def close_inferred_turn(s: State, line: Line, out: Ops, at: int) -> None:
    if not s.inferred_turns or s.explicit_turns or not s.turn_active or s.turn_id is None:
        return
    replied = s.turn_replied
    facts.turn_ended(
        s, line, out, s.turn_id, "succeeded" if replied else "failed", at, None if replied else NO_REPLY
    )


def _next_session(s: State, line: Line, thread: str, out: Ops) -> bool:
    """Session files concatenated into one stream (`cat rollout-*.jsonl | ingestor run`): another
    session's `session_meta` ends the current one as the stream's end would (at its last line's
    time) and makes `thread` current. False when `thread` cannot be entered (an unusable id)."""
    if not 0 < len(thread) <= MAX_ID_CHARS:
        return False
    close_inferred_turn(s, line, out, s.prev_at)
    facts.release_turnless_at_end(s, out)
    facts.conversation(s, line, out, s.prev_at)
    s.enter_thread(thread)
    s.line_turn = None
    s.explicit_turns = s.inferred_turns = False
    s.session_cwd = s.model_provider = s.client_name = None
    return True


def _meta(s: State, line: Line, payload: dict[str, Any], at: int, out: Ops) -> None:
    changed = False
    thread = payload.get("id")
    if type(thread) is str and s.thread_id is not None and thread != s.thread_id:
        cur = s.cur
        if (cur is not None and thread == cur.forked_from) or not _next_session(s, line, thread, out):
            # A sub-agent's file goes on with its parent's history, copied: not this thread's facts.
            s.copied_from = thread
            return
        changed = True
    elif type(thread) is str and s.thread_id is None:
        s.enter_thread(thread)
        changed = True
    if facts.forked(s, payload.get("forked_from_id", _spawned_by(payload))):
        changed = True
    cwd = payload.get("cwd")
    if type(cwd) is str:
        s.session_cwd = cwd
    for attr, name in (("model_provider", "model_provider"), ("client_name", "originator")):
        value = payload.get(name)
        if type(value) is str and getattr(s, attr) is None:
            setattr(s, attr, value)
            changed = True
    if changed:
        facts.conversation(s, line, out, at)


def _spawned_by(payload: dict[str, Any]) -> Any:
    """A sub-agent's parent thread (`source.subagent.thread_spawn.parent_thread_id`): a sub-agent
    spawned without its parent's history names no `forked_from_id`, but is linked the same way."""
    source = payload.get("source")
    subagent = source.get("subagent") if type(source) is dict else None
    spawn = subagent.get("thread_spawn") if type(subagent) is dict else None
    return spawn.get("parent_thread_id") if type(spawn) is dict else None


def _call_started(s: State, line: Line, payload: dict[str, Any], at: int, out: Ops) -> None:
    """A `function_call` / `custom_tool_call`: the model asked for a tool. Shell calls carry argv
    (`shell`) or a script (`shell_command`); one that runs `apply_patch` is a file change, as Codex
    reports it live. 0.169's `exec_command` calls are left raw: 0.169 writes
    an `item_completed` CommandExecution for each (also for an interrupted one, after its turn), with
    the argv Codex ran (`/bin/bash -lc ...`, as the live streams give it), and that item is the row.
    The call's `parsedCmd` is held for the op that ends it (its output, unless an `item_completed`
    ended it first and described it better)."""
    call_id = payload.get("call_id")
    tid = s.turn_id
    if type(call_id) is not str or tid is None:
        return
    name = payload.get("name")
    fields: CommandColumns
    if payload.get("type") == "custom_tool_call":
        patch = payload.get("input")
        if name != "apply_patch" or type(patch) is not str:
            return
        fields = tools.file_fields(tools.patch_changes(patch, s.session_cwd), patch)
    else:
        arguments = payload.get("arguments")
        args = _loads_text(arguments) if type(arguments) is str else None
        if type(args) is not dict:
            return
        mcp = tools.split_mcp_name(name, payload.get("namespace"))
        if name == "update_plan":
            steps = tools.plan_steps(args.get("plan"))
            tools.plan_message(s, line, out, SESSION, tid, args.get("explanation"), steps, at)
            return
        if mcp is not None:
            fields = tools.mcp_fields(mcp[0], mcp[1], args)
        elif type(name) is str and name in _SHELL_TOOLS:
            fields = _shell_call(s, args)
        else:
            return
    fields["status"] = "running"
    fields["startedAt"] = at
    held = fields.pop("parsedCmd", None)
    facts.command(s, line, out, SESSION, call_id, tid, fields)
    s.commands[call_id].held_description = held


_SHELL_TOOLS: Final = frozenset({"shell", "shell_command"})


def _shell_call(s: State, args: dict[str, Any]) -> CommandColumns:
    script = args.get("command")
    patch = tools.shell_patch(script)
    if patch is not None:
        return tools.file_fields(tools.patch_changes(patch, s.session_cwd), patch)
    workdir = args.get("workdir")
    return {
        "command": split_command(script),
        "cwd": workdir if type(workdir) is str else None,
        "source": facts.COMMAND_SOURCE,
    }


def _call_output(s: State, line: Line, payload: dict[str, Any], at: int, out: Ops) -> None:
    """A `function_call_output` / `custom_tool_call_output`, for a call still running (0.169 ends
    most calls with an `item_completed` first, which says more)."""
    call_id = payload.get("call_id")
    if type(call_id) is not str or not facts.is_running(s, call_id):
        return
    cmd = s.commands[call_id]
    text, exit_code = tool_output(payload.get("output"))
    if text is None:
        return
    if cmd.tool == tools.MCP:
        # The output is the result's text (or JSON), or the error Codex raised for the call.
        failed = text.startswith(_MCP_ERROR) or (text.startswith(_WALL_TIME) and _MCP_ERROR in text)
        status = "failed" if failed else "completed"
    elif exit_code is not None:
        status = "completed" if exit_code == 0 else "failed"
    elif text.endswith(_ABORTED):
        status = "canceled"
    else:
        # A patch that fails verification: a plain message, no exit code.
        status = "failed"
    fields: CommandColumns = {
        "status": status,
        "exitCode": exit_code,
        "aggregatedOutput": text,
        "endedAt": at,
        "parsedCmd": cmd.held_description,
    }
    cmd.held_description = None
    facts.command(s, line, out, SESSION, call_id, cmd.turn_id, fields)


_MCP_ERROR: Final = "tool call error:"
_ABORTED: Final = "aborted by user"
_WALL_TIME: Final = "Wall time:"
_EXIT_CODE: Final = re.compile(r"^(?:Exit code: |Process exited with code )(-?\d+)$", re.MULTILINE)


def _loads_text(text: str) -> Any:
    """The JSON value a string field holds (a call's arguments, a tool's output); None if it holds
    none, or one too costly to parse (the line is stored whole all the same)."""
    data = text.encode()
    if too_costly_to_parse(data):
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def tool_output(output: Any) -> tuple[str | None, int | None]:
    """(text, exit code) of a tool output as session files keep it: 0.63 writes JSON
    `{"output", "metadata": {"exit_code"}}`, 0.169 text with an `Exit code: N` or `Process exited with
    code N` line, or a list of `input_text` parts."""
    if type(output) is list:
        texts = [p["text"] for p in output if type(p) is dict and type(p.get("text")) is str]
        return "\n".join(texts), None
    if type(output) is not str:
        return None, None
    if output.startswith("{"):
        result = _loads_text(output)
        if type(result) is dict and type(result.get("output")) is str:
            meta = result.get("metadata")
            return result["output"], facts.integer(meta.get("exit_code") if type(meta) is dict else None)
    found = _EXIT_CODE.search(output)
    return output, int(found.group(1)) if found is not None else None


def _web_search_call(s: State, line: Line, payload: dict[str, Any], at: int, out: Ops) -> None:
    """A `web_search_call` item (the search ran on the model's side, so it is complete). 0.63 gives
    it no id: it gets `<turn id>/web_search/<n>`, n counting the turn's searches."""
    tid = s.turn_id
    if tid is None:
        return
    call_id = payload.get("id")
    if type(call_id) is not str:
        call_id = f"{tid}/web_search/{s.occurrence('web_search', tid)}"
    elif call_id in s.commands:
        return  # 0.169 told it first, as an item_completed WebSearch
    action = payload.get("action")
    query = action.get("query") if type(action) is dict else None
    fields = tools.search_fields(query, action)
    fields["status"] = "completed"
    fields["endedAt"] = at
    facts.command(s, line, out, SESSION, call_id, tid, fields)


_CALLS: Final = {
    "function_call": _call_started,
    "custom_tool_call": _call_started,
    "function_call_output": _call_output,
    "custom_tool_call_output": _call_output,
    "web_search_call": _web_search_call,
}


def handle(s: State, line: Line, method: str, obj: dict[str, Any], out: Ops) -> None:
    payload = obj.get("payload")
    if type(payload) is not dict:
        return
    if s.copied_from is not None:
        # Copied lines name no thread; the first line after them names this file's own (0.169:
        # thread_settings_applied).
        if payload.get("thread_id") != s.thread_id:
            return
        s.copied_from = None
    at = s.last_at  # the line's timestamp (see codex_time)
    if method == "event_msg":
        if payload.get("type") == "user_message" and not s.explicit_turns:
            close_inferred_turn(s, line, out, at)
            s.inferred_turns = True
            facts.turn_started(s, line, out, facts.next_derived_turn(s), at)
        legacy.handle(s, line, SESSION, payload, None, at, out)
    elif method == "response_item":
        item_type = payload.get("type")
        handler = _CALLS.get(item_type) if type(item_type) is str else None
        if handler is not None:
            handler(s, line, payload, at, out)
    elif method == "session_meta":
        _meta(s, line, payload, at, out)
    elif method == "turn_context":
        cwd = payload.get("cwd")
        if type(cwd) is str:
            s.session_cwd = cwd
        model = payload.get("model")
        if type(model) is str:
            s.model = model
            tid = payload.get("turn_id")
            turn: str | None = s.turn_id if s.turn_active else None
            if type(tid) is str and tid:
                turn = facts.turn_key(s, tid)
                facts.turn_seen(s, line, out, turn, at)  # a file read from the middle of the turn
            if turn is not None and turn in s.turn_started_at:
                facts.turn_details(s, line, out, turn, model, None)
