"""`codex exec --json` lines (`{"type": "thread.started" | "turn.started" | "item.completed" | ...}`).

This stream names no turns and restarts its item ids (`item_0`, ...) in every process, while
`codex exec resume` appends to the same thread. Each run (one `codex exec` process: one turn) is named
by what it said first: its turn is `<thread>/run:<hash of its first line after turn.started>`, its
items `<run>/<item id>`, and the ops that name the run carry `run` so that the store files the run as
the thread's next turn (or the turn another channel already stored in that place) and stores ids
under the run as under that turn (docs/operations.md, "Across processes and channels"). So a replay
of a run lands in the turn it landed in before, and a resumed run piped into its own process
continues the thread's turns. The `turn.started` line itself (the same bytes in every run) has no
turn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final

from ingestor.lines import Line
from ingestor.normalize import facts, tools, usage_facts
from ingestor.normalize.app_server import split_command
from ingestor.normalize.state import EXEC, Ops, State

Handler = Callable[[State, Line, dict[str, Any], int, Ops], None]

COMMAND_STATUS: Final = {
    "in_progress": "running",
    "completed": "completed",
    "failed": "failed",
    "declined": "declined",
}


def _thread_started(s: State, line: Line, obj: dict[str, Any], at: int, out: Ops) -> None:
    s.exec_first_usage = True  # every `codex exec` process prints it first, `exec resume` too
    tid = obj.get("thread_id")
    if type(tid) is str and tid != s.thread_id:
        s.enter_thread(tid)
        facts.conversation(s, line, out, at)


def _turn_started(s: State, line: Line, obj: dict[str, Any], at: int, out: Ops) -> None:
    # The run is named by its next line (_run_turn): until then, only when it began is known.
    s.exec_run_started_at = at
    s.turn_active = False
    s.line_turn = None


def _run_turn(s: State, line: Line, at: int, out: Ops) -> str | None:
    """The current run's turn; the first line after `turn.started` names and starts it."""
    started = s.exec_run_started_at
    if started is None:
        return s.turn_id
    s.exec_run_started_at = None
    run = hashlib.blake2b(line.data, digest_size=12).hexdigest()
    tid = f"{s.thread_id or s.conversation_id}/run:{run}"
    first = len(out)
    facts.turn_started(s, line, out, tid, started)
    _mark_run(out, first, tid)
    s.run_named = True
    return tid


def _mark_run(out: Ops, first: int, run: str) -> None:
    """Tag the ops from `out[first:]` that name the run: the store resolves the run to its turn."""
    for op in out[first:]:
        if op["args"].get("turnId") == run:
            op["run"] = True


def _turn_completed(s: State, line: Line, obj: dict[str, Any], at: int, out: Ops) -> None:
    """A run's end, with its usage. The stream of 0.63 (whose usage has no reasoning count) reports
    the totals of its process, which begin again in every `exec resume`: a process's first report
    is `restarted` (usage_facts.usage). 0.169's go on from the thread's, as its session file's do."""
    tid = _run_turn(s, line, at, out)
    if tid is None:
        return
    first = len(out)
    usage = obj.get("usage")
    if type(usage) is dict:
        totals = (
            usage.get("input_tokens"),
            usage.get("cached_input_tokens"),
            usage.get("output_tokens"),
            usage.get("reasoning_output_tokens"),
            usage.get("total_tokens"),
        )
        restarted = s.exec_first_usage and "reasoning_output_tokens" not in usage
        usage_facts.usage(s, line, out, EXEC, tid, totals, usage.get("model_context_window"), at, restarted)
        s.exec_first_usage = False
    facts.turn_ended(s, line, out, tid, "succeeded", at, None)
    _mark_run(out, first, tid)


def _failed(s: State, line: Line, obj: dict[str, Any], at: int, out: Ops) -> None:
    # `turn.failed {error: {message}}` and the stream's fatal `error {message}` both end the turn.
    if obj.get("type") == "error" and not s.turn_active and s.exec_run_started_at is None:
        return
    tid = _run_turn(s, line, at, out)
    if tid is None:
        return
    first = len(out)
    error = obj.get("error") if obj.get("type") == "turn.failed" else obj
    message = error.get("message") if type(error) is dict else None
    facts.turn_ended(s, line, out, tid, "failed", at, message if type(message) is str else None)
    _mark_run(out, first, tid)


def _item(s: State, line: Line, obj: dict[str, Any], at: int, out: Ops) -> None:
    item = obj.get("item")
    if type(item) is not dict:
        return
    tid = _run_turn(s, line, at, out)
    if tid is None:
        return
    first = len(out)
    _item_facts(s, line, item, obj.get("type") == "item.completed", tid, at, out)
    _mark_run(out, first, tid)


def _item_facts(
    s: State, line: Line, item: dict[str, Any], completed: bool, tid: str, at: int, out: Ops
) -> None:
    item_id = item.get("id")
    kind = item.get("type")
    if kind == "command_execution" and type(item_id) is str:
        output = item.get("aggregated_output")
        exit_code = item.get("exit_code")
        fields: dict[str, Any] = {
            "command": split_command(item.get("command")),
            "source": facts.COMMAND_SOURCE,
            "status": facts.lookup(COMMAND_STATUS, item.get("status")),
            # Partial (often "") until the item completes: a replayed start must not overwrite it.
            "aggregatedOutput": output if completed and type(output) is str else None,
            "exitCode": facts.integer(exit_code),
            ("endedAt" if completed else "startedAt"): at,
        }
        facts.command(s, line, out, EXEC, f"{tid}/{item_id}", tid, fields)
    elif type(kind) is str and kind in _TOOL_ITEMS and type(item_id) is str:
        _tool_item(s, line, item, tid, item_id, completed, at, out)
    elif kind == "todo_list":  # the plan, at every update and again when the turn ends
        tools.plan_message(s, line, out, EXEC, tid, None, tools.plan_steps(item.get("items")), at)
    elif not completed:
        return
    elif kind == "agent_message" and type(item.get("text")) is str:
        facts.message(s, line, out, EXEC, tid, "assistant", item["text"], item, at)
    elif kind == "reasoning" and type(item.get("text")) is str:
        facts.reasoning(
            s,
            line,
            out,
            EXEC,
            tid,
            f"{tid}/{item_id}" if type(item_id) is str else None,
            [item["text"]],
            item,
            at,
        )


_TOOL_ITEMS: Final = frozenset({"file_change", "mcp_tool_call", "web_search"})


def _tool_item(
    s: State, line: Line, item: dict[str, Any], tid: str, item_id: str, completed: bool, at: int, out: Ops
) -> None:
    """`file_change` (paths and kinds only), `mcp_tool_call` (snake_case `structured_content`) and
    `web_search` items (see tools.py). 0.169 writes a `web_search` line with its `id` key twice (the
    item id, then the search's `ws_...` id); the parser keeps the last, and both copies of the line
    carry the same one, so the call id is stable."""
    kind = item.get("type")
    fields: dict[str, Any]
    if kind == "file_change":
        fields = tools.file_fields(tools.exec_changes(item.get("changes")))
    elif kind == "mcp_tool_call":
        fields = tools.mcp_item_fields(item)
    else:
        fields = tools.search_fields(item.get("query"), item.get("action"))
    status = facts.lookup(COMMAND_STATUS, item.get("status"))
    fields["status"] = status if status is not None else "completed" if completed else "running"
    fields["endedAt" if completed else "startedAt"] = at
    if not completed:
        del fields["parsedCmd"]  # written once, by the completed item (see tools.py)
    facts.command(s, line, out, EXEC, f"{tid}/{item_id}", tid, fields)


HANDLERS: Final[dict[str, Handler]] = {
    "thread.started": _thread_started,
    "turn.started": _turn_started,
    "turn.completed": _turn_completed,
    "turn.failed": _failed,
    "error": _failed,
    "item.started": _item,
    "item.updated": _item,
    "item.completed": _item,
}


def handle(s: State, line: Line, method: str, obj: dict[str, Any], out: Ops) -> None:
    handler = HANDLERS.get(method)
    if handler is not None:
        handler(s, line, obj, s.last_at, out)
