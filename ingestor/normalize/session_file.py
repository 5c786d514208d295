"""Codex session files (`$CODEX_HOME/sessions/.../rollout-*.jsonl`): `{"timestamp", "type", "payload"}`.

- `session_meta`: the thread id (`payload.id`), provider and originator (kept as the client name);
- `turn_context`: the model of the turns that follow;
- `event_msg`: a core event (see legacy.py); its time is the line's `timestamp`, so a replay of an old
  file stores when things happened, not when the file was read;
- `response_item` (the model transcript): the messages in it also arrive as `event_msg`, so they are
  raw only; but Codex 0.63 recorded commands only here (`function_call` of the `shell` tool with an
  argv, and its `function_call_output` whose JSON text holds the output and exit code).

Codex 0.63 session files have no turn events at all: there, each `user_message` starts a turn (with a
derived id), which ends at the next one or at the end of the file, `succeeded` when it produced an
assistant message and `failed` otherwise (a failed turn leaves nothing else behind).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from ingestor.lines import Line
from ingestor.normalize import facts, legacy
from ingestor.normalize.state import SESSION, Ops, State

NO_REPLY: Final = "no reply recorded in the session file"


def close_inferred_turn(s: State, line: Line, out: Ops, at: int) -> None:
    if not s.inferred_turns or s.explicit_turns or not s.turn_active or s.turn_id is None:
        return
    replied = s.turn_replied
    facts.turn_ended(
        s, line, out, s.turn_id, "succeeded" if replied else "failed", at, None if replied else NO_REPLY
    )


def _meta(s: State, line: Line, payload: dict[str, Any], at: int, out: Ops) -> None:
    changed = False
    thread = payload.get("id")
    if type(thread) is str and s.thread_id is None:
        s.enter_thread(thread)
        changed = True
    for attr, name in (("model_provider", "model_provider"), ("client_name", "originator")):
        value = payload.get(name)
        if type(value) is str and getattr(s, attr) is None:
            setattr(s, attr, value)
            changed = True
    if changed:
        facts.conversation(s, line, out, at)


def _function_call(s: State, line: Line, payload: dict[str, Any], at: int, out: Ops) -> None:
    call_id = payload.get("call_id")
    tid = s.turn_id
    if type(call_id) is not str or tid is None:
        return
    if payload.get("type") == "function_call":
        if payload.get("name") != "shell" or type(payload.get("arguments")) is not str:
            return
        args = orjson.loads(payload["arguments"])
        argv = args.get("command") if type(args) is dict else None
        if type(argv) is not list:
            return
        workdir = args.get("workdir")
        fields = {
            "command": [str(a) for a in argv],
            "cwd": workdir if type(workdir) is str else None,
            "status": "running",
            "startedAt": at,
        }
        facts.command(s, line, out, SESSION, call_id, tid, fields)
    elif call_id in s.commands and type(payload.get("output")) is str:
        result = orjson.loads(payload["output"])
        if type(result) is not dict:
            return
        meta = result.get("metadata")
        exit_code = meta.get("exit_code") if type(meta) is dict else None
        output = result.get("output")
        fields = {
            "status": None if type(exit_code) is not int else "completed" if exit_code == 0 else "failed",
            "exitCode": facts.integer(exit_code),
            "aggregatedOutput": output if type(output) is str else None,
            "endedAt": at,
        }
        facts.command(s, line, out, SESSION, call_id, s.commands[call_id].turn_id, fields)


def handle(s: State, line: Line, method: str, obj: dict[str, Any], out: Ops) -> None:
    payload = obj.get("payload")
    if type(payload) is not dict:
        return
    at = s.last_at  # the line's timestamp (see codex_time)
    if method == "event_msg":
        if payload.get("type") == "user_message" and not s.explicit_turns:
            close_inferred_turn(s, line, out, at)
            s.inferred_turns = True
            facts.turn_started(s, line, out, facts.next_derived_turn(s), at)
        legacy.handle(s, line, SESSION, payload, None, at, out)
    elif method == "response_item":
        if payload.get("type") in ("function_call", "function_call_output"):
            try:
                _function_call(s, line, payload, at, out)
            except orjson.JSONDecodeError:
                return  # arguments or output that aren't JSON: nothing to derive, the raw line stays
    elif method == "session_meta":
        _meta(s, line, payload, at, out)
    elif method == "turn_context":
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
