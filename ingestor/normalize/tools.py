"""Tool calls that are not shell commands: file changes, MCP tool calls and web searches.

Each becomes a `commands` row (`source` file | mcp | search) whichever stream tells it; the stream
modules read their own spelling of the call and build the row's columns here, so that every stream
fills them the same way:

- `command`: the tool and what it acted on: `["apply_patch", <changed paths, sorted>]` (a move's
  destination only in `parsedCmd`),
  `["mcp", <server>, <tool>]`, `["web_search", <query or url>]`;
- `parsedCmd`: the whole call, lossless: `{"type": "fileChange", "changes": [{"path", "kind",
  "movePath"?, "diff"?}], "patch"?}`, `{"type": "mcpToolCall", "server", "tool", "arguments",
  "result"?, "error"?}`, `{"type": "webSearch", "query", "action"?}`;
- the output columns: what Codex reports (a patch's stdout/stderr, an MCP result's text, an error's
  message).

`parsedCmd` is written once per call, by the event that ends it: a start knows less than the end,
and a start seen again (a replay) must not undo what the end wrote (merge rule 5: a present value
replaces). A call cut short by its turn keeps `command` and its raw events, without `parsedCmd`.
"""

from __future__ import annotations

import posixpath
from typing import Any, Final

from ingestor.lines import Line
from ingestor.normalize import facts
from ingestor.normalize.state import Ops, State
from ingestor.ops import Op, make_key

FILE: Final = "file"
MCP: Final = "mcp"
SEARCH: Final = "search"

_PATCH_HEADERS: Final = (
    ("*** Add File: ", "add"),
    ("*** Update File: ", "update"),
    ("*** Delete File: ", "delete"),
)
_MOVE_HEADER: Final = "*** Move to: "


def _str(value: Any) -> str | None:
    return value if type(value) is str else None


def change(path: str, kind: Any, move_path: Any = None, diff: Any = None) -> dict[str, Any]:
    """One file change in the row's shape. `diff`: the whole content for add/delete, a unified hunk
    for update (as Codex reports it)."""
    row: dict[str, Any] = {"path": path, "kind": kind if type(kind) is str else "update"}
    if type(move_path) is str:
        row["movePath"] = move_path
    if type(diff) is str:
        row["diff"] = diff
    return row


def v2_changes(changes: Any) -> list[dict[str, Any]]:
    """app-server `fileChange.changes`: `[{path, kind: {type, move_path?}, diff}]`."""
    out: list[dict[str, Any]] = []
    for item in changes if type(changes) is list else ():
        if type(item) is dict and type(item.get("path")) is str:
            kind = item.get("kind")
            kind = kind if type(kind) is dict else {"type": kind}
            out.append(change(item["path"], kind.get("type"), kind.get("move_path"), item.get("diff")))
    return out


def keyed_changes(changes: Any) -> list[dict[str, Any]]:
    """Core events' `changes` (`patch_apply_*`, 0.169 session files' `FileChange`): keyed by path,
    `{type, content | unified_diff, move_path?}`."""
    out: list[dict[str, Any]] = []
    for path, spec in changes.items() if type(changes) is dict else ():
        if type(spec) is dict:
            diff = spec.get("unified_diff", spec.get("content"))
            out.append(change(path, spec.get("type"), spec.get("move_path"), diff))
    return out


def exec_changes(changes: Any) -> list[dict[str, Any]]:
    """exec `file_change.changes`: `[{path, kind}]`, no diff and no move destination."""
    return [
        change(item["path"], item.get("kind"))
        for item in (changes if type(changes) is list else ())
        if type(item) is dict and type(item.get("path")) is str
    ]


def patch_changes(patch: str, cwd: str | None) -> list[dict[str, Any]]:
    """The changes an `apply_patch` text asks for (the session files' only record of a patch in
    0.63), paths resolved against the working directory as Codex does; `diff` is the patch's own
    body for that file."""
    out: list[dict[str, Any]] = []
    body: list[str] = []

    def resolve(path: str) -> str:
        return posixpath.join(cwd, path) if cwd is not None else path

    def flush() -> None:
        if out and body:
            # An added file's lines are its content (each prefixed "+"), as the other streams report it.
            lines = [t[1:] for t in body] if out[-1]["kind"] == "add" else body
            out[-1]["diff"] = "\n".join(lines) + "\n"
        body.clear()

    for text in patch.splitlines():
        header = next(((text[len(h) :], kind) for h, kind in _PATCH_HEADERS if text.startswith(h)), None)
        if header is not None:
            flush()
            out.append(change(resolve(header[0]), header[1]))
        elif text.startswith(_MOVE_HEADER) and out:
            out[-1]["movePath"] = resolve(text[len(_MOVE_HEADER) :])
        elif out and not text.startswith("*** "):
            body.append(text)
    flush()
    return out


_PATCH_BEGIN: Final = "*** Begin Patch"
_PATCH_END: Final = "*** End Patch"


def shell_patch(command: Any) -> str | None:
    """The patch of a shell call that runs `apply_patch` (`apply_patch <<'EOF' ... EOF`, as argv or
    one script): Codex intercepts it and applies the patch itself, so its live streams report a file
    change, while a 0.63 session file keeps only the shell call."""
    script = command[-1] if type(command) is list and command else command
    if type(script) is not str or not script.lstrip().startswith(("apply_patch", "applypatch")):
        return None
    begin, end = script.find(_PATCH_BEGIN), script.find(_PATCH_END)
    if begin < 0 or end < begin:
        return None
    return script[begin : end + len(_PATCH_END)] + "\n"


def file_fields(changes: list[dict[str, Any]], patch: str | None = None) -> dict[str, Any]:
    """`command` and `parsedCmd` of a file change. Changes are sorted by path: streams list them in
    different orders, the row must not depend on which one told it. `command` names the paths the
    patch changes, not where it moves them (`parsedCmd` has `movePath`): exec's stream does not tell
    the destination, and `command` is the call's identity across channels (facts.command)."""
    ordered = sorted(changes, key=lambda c: c["path"])
    touched = sorted({c["path"] for c in ordered})
    parsed: dict[str, Any] = {"type": "fileChange", "changes": ordered}
    if patch is not None:
        parsed["patch"] = patch
    return {"command": ["apply_patch", *touched], "parsedCmd": parsed, "source": FILE}


def result_text(result: Any) -> str | None:
    """The readable text of an MCP result: its text content parts, one per line."""
    content = result.get("content") if type(result) is dict else None
    if type(content) is not list:
        return None
    texts = [p["text"] for p in content if type(p) is dict and type(p.get("text")) is str]
    return "\n".join(texts) if texts else None


def mcp_fields(
    server: Any, tool: Any, arguments: Any, result: Any = None, error: Any = None
) -> dict[str, Any]:
    """`command`, `parsedCmd` and output columns of an MCP tool call. `error`: the message of a call
    that failed without a result."""
    parsed: dict[str, Any] = {"type": "mcpToolCall", "server": server, "tool": tool, "arguments": arguments}
    if result is not None:
        parsed["result"] = result
    message = _str(error)
    if message is not None:
        parsed["error"] = message
    text = result_text(result)
    return {
        "command": ["mcp", str(server), str(tool)] if type(server) is str and type(tool) is str else None,
        "parsedCmd": parsed,
        "source": MCP,
        "stdout": text,
        "stderr": message,
        "aggregatedOutput": text if message is None else message if text is None else f"{text}\n{message}",
    }


def mcp_item_fields(item: dict[str, Any]) -> dict[str, Any]:
    """`mcp_fields` of an MCP tool call item (v2 `mcpToolCall`, exec `mcp_tool_call`, 0.169 session
    files' `McpToolCall`): `server`, `tool`, `arguments`, `result`, `error` (`{message}` or text)."""
    error = item.get("error")
    return mcp_fields(
        item.get("server"),
        item.get("tool"),
        item.get("arguments"),
        item.get("result"),
        error.get("message") if type(error) is dict else error,
    )


def mcp_failed(result: Any) -> bool:
    """An MCP result with `isError: true` is a failed call (its content says why)."""
    return type(result) is dict and result.get("isError") is True


def split_mcp_name(name: Any, namespace: Any) -> tuple[str, str] | None:
    """(server, tool) of a session file's function call to an MCP tool: 0.63 names it
    `mcp__<server>__<tool>`, 0.169 `{name: <tool>, namespace: "mcp__<server>"}`."""
    if type(name) is not str:
        return None
    if type(namespace) is str and namespace.startswith("mcp__"):
        return namespace[5:], name
    if name.startswith("mcp__"):
        server, sep, tool = name[5:].partition("__")
        if sep and server and tool:
            return server, tool
    return None


def search_fields(query: Any, action: Any) -> dict[str, Any]:
    """`command` and `parsedCmd` of a web search. The target is the query, else what the action
    opened or looked for (openPage: url; findInPage: pattern); an empty query (v2 `item/started`)
    names nothing yet, so `command` is left for the completed item."""
    parsed: dict[str, Any] = {"type": "webSearch", "query": query}
    if action is not None:
        parsed["action"] = action
    target = query if type(query) is str and query else None
    if target is None and type(action) is dict:
        target = next(
            (action[k] for k in ("query", "url", "pattern") if type(action.get(k)) is str and action[k]),
            None,
        )
        if target is None and type(action.get("queries")) is list:
            target = " | ".join(q for q in action["queries"] if type(q) is str) or None
    return {
        "command": ["web_search", target] if target is not None else None,
        "parsedCmd": parsed,
        "source": SEARCH,
    }


# --- plans ---------------------------------------------------------------------------------------

PLAN_ROLE: Final = "tool"
"""A plan is a message of the turn: the agent posts it with its `update_plan` tool, so the spec's
`tool` role. There is no plan table, and a turn's messages are what `show turn` and
`history:getTurn` already return in time order: the turn's latest plan is its last message whose
`rawContent.type` is `plan`."""
_STEP_STATUS: Final = {
    "pending": "pending",
    "in_progress": "inProgress",
    "inProgress": "inProgress",
    "completed": "completed",
}
_STEP_MARK: Final = {"pending": "[ ]", "inProgress": "[>]", "completed": "[x]"}


def plan_steps(plan: Any) -> list[dict[str, str]]:
    """`[{step, status}]` (v2, core events, `update_plan` arguments) with the status spelled as v2 does
    (pending | inProgress | completed); exec's `todo_list` `[{text, completed}]` likewise."""
    steps: list[dict[str, str]] = []
    for item in plan if type(plan) is list else ():
        if type(item) is not dict:
            continue
        if type(item.get("step")) is str:
            status = _STEP_STATUS.get(item["status"]) if type(item.get("status")) is str else None
            steps.append({"step": item["step"], "status": status or "pending"})
        elif type(item.get("text")) is str:
            steps.append(
                {"step": item["text"], "status": "completed" if item.get("completed") is True else "pending"}
            )
    return steps


def plan_message(
    s: State,
    line: Line,
    out: Ops,
    family: str,
    turn_id: str,
    explanation: Any,
    steps: list[dict[str, str]],
    at: int,
) -> None:
    """A plan update as a `tool` message: readable content (the explanation, then one `[x]`/`[>]`/`[ ]`
    line per step) and the plan itself as `rawContent`.

    Keyed by turn and the plan's progress (each step's text and whether it is done: all that exec's
    `todo_list` tells, without explanation or in-progress mark), without an occurrence count: the
    same plan told again (exec repeats it when the turn ends; v2, the session file and exec all tell
    it) is one row. An update that changes only what exec cannot tell (`family`'s previous plan in
    the turn had the same progress and other content) is a fact exec has no line for: keyed by its
    whole content."""
    lines = [explanation] if type(explanation) is str and explanation else []
    lines += [f"{_STEP_MARK[step['status']]} {step['step']}" for step in steps]
    content = "\n".join(lines)
    raw: dict[str, Any] = {"type": "plan", "steps": steps}
    if type(explanation) is str:
        raw["explanation"] = explanation
    progress = facts.text_hash("\n".join(f"{step['status'] == 'completed'} {step['step']}" for step in steps))
    whole = facts.text_hash(content)
    told = s.plan_progress.setdefault(turn_id, {})
    last = told.get(family)
    if last is not None and last[0] == progress:
        identity = last[2] if last[1] == whole else whole  # told again | changed what exec cannot tell
    else:
        identity = progress
    told[family] = (progress, whole, identity)
    op: Op = {
        "op": "appendMessage",
        "key": make_key("m", PLAN_ROLE, "plan", identity),  # the store scopes it by turn
        "args": {
            "turnId": turn_id,
            "role": PLAN_ROLE,
            "content": content,
            "rawContent": raw,
            "createdAt": at,
        },
    }
    facts.file_under_thread(s, op)
    out.append(op)
