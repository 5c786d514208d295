"""Re-record the Codex fixtures under ``fixtures/`` from the real, pinned Codex CLIs.

Every scenario is a fixed script for the local model server (``model_server.py``); the real CLI
runs it offline, in a throwaway cwd and CODEX_HOME, and we keep exactly what it writes:

* ``app-server``: every stdout line of ``codex app-server`` (responses included) while we drive it
  with ``initialize``/``thread/start``/``turn/start``/``turn/interrupt`` (our requests are not recorded);
* ``exec``: stdout of ``codex exec --json`` for the first turn, then ``codex exec --json resume
  --last`` for each further turn, concatenated (so one file shows ``thread.started`` per process);
* ``tui``: the interactive terminal UI in a detached ``tmux`` session (prompts typed with
  ``send-keys``, the screen read with ``capture-pane``); it has no stream of its own to keep, only
  its session file (and the last screen, in the manifest's ``observed``);
* ``sessions``: the ``rollout-*.jsonl`` files Codex wrote for each of those runs.

``fixtures/manifest.json`` lists each file with the facts its scenario is *known* to contain, taken
from the script below (never from the recording), for golden tests to assert against.

    npm ci --prefix testing/codex
    .venv/bin/python testing/codex/record.py                # everything
    .venv/bin/python testing/codex/record.py --version 0.169.0 --mode app-server --scenario multi_turn
    .venv/bin/python testing/codex/record.py --check   # validate fixtures/ without running Codex
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

# Run as a script or imported as testing.codex.record: either way import siblings by full name
# (a bare `cli` or `model_server` could collide with other top-level modules).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from testing.codex.cli import NPM_ALIASES, CodexNotInstalled, codex_argv
from testing.codex.mcp_server import BROKEN_ERROR, FAIL_TEXT, lookup_result
from testing.codex.mcp_server import SERVER as MCP_SERVER
from testing.codex.model_server import (
    ApplyPatch,
    HttpError,
    McpCall,
    Message,
    ModelServer,
    RateLimits,
    Reasoning,
    Shell,
    SpawnAgent,
    Step,
    UpdatePlan,
    Usage,
    WebSearch,
    codex_config_toml,
)

log = logging.getLogger("codex.record")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIXTURES = REPO / "fixtures"
MANIFEST = FIXTURES / "manifest.json"


# thread/start `sandbox` spelling per version: 0.169 takes kebab-case and rejects camelCase,
# 0.63 the reverse.
SANDBOX: dict[str, str] = {"0.169.0": "danger-full-access", "0.63.0": "dangerFullAccess"}
VERSIONS = tuple(NPM_ALIASES)
MODES = ("app-server", "exec")
TUI = "tui"
"""A mode no scenario has unless it names it: needs tmux, and records only a session file."""

TURN_TIMEOUT_S = 180.0
# After a turn's end marker, keep reading until the server is quiet this long, so trailing events
# (legacy duplicates, usage updates, status changes) land before the next turn starts.
QUIET_S = 1.5
QUIET_MAX_S = 15.0

JSON = dict[str, Any]


class RecordError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Scenarios: what the model "does" each turn, and what the commands are known to print.


@dataclass(frozen=True)
class Cmd:
    """A shell command the model runs, with what it is known to produce."""

    command: str
    exit_code: int | None = 0  # None: killed by an interrupt
    stdout: bytes = b""
    stderr: bytes = b""


ToolCall = ApplyPatch | McpCall | UpdatePlan | Shell | SpawnAgent
"""A `Shell` among a turn's tools runs `apply_patch` through the shell: Codex applies it itself and
reports a file change."""


@dataclass(frozen=True)
class Turn:
    prompt: str
    reasoning: tuple[str, ...] = ()
    commands: tuple[Cmd, ...] = ()
    # After the commands, one model call each (0.63 stalls on parallel calls).
    tools: tuple[ToolCall, ...] = ()
    # A server-side web search sent with the final message (Codex makes no follow-up call for it).
    search: str | None = None
    message: str | None = None
    # The model call after the commands (or the only one) answers HTTP 500: the turn fails.
    fail: bool = False
    # app-server only: send turn/interrupt once the (single, long) command has started; the model
    # is not called again, so the turn has no message.
    interrupt: bool = False
    # app-server only: which thread (in thread/start order) the turn runs on.
    thread: int = 0
    # app-server only: the turn's thread, new here, is a fork (thread/fork) of this thread as it
    # stands, instead of a thread/start.
    fork_of: int | None = None
    # A sub-agent's turn (its thread new here): Codex runs it itself when the previous turn, on
    # thread `spawned_by`, calls spawn_agent; nobody types its prompt (the spawn's message).
    spawned_by: int | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    turns: tuple[Turn, ...]
    modes: tuple[str, ...] = MODES
    versions: tuple[str, ...] = VERSIONS
    # Run with a model from Codex's catalog and the config that offers apply_patch, update_plan, web
    # search and the fixture MCP server (see tool_config).
    all_tools: bool = False
    # exec only: resume by the thread id of the first run (`resume <id>`) instead of `resume --last`.
    resume_by_id: bool = False


def _seq_bytes(n: int) -> bytes:
    return "".join(f"{i}\n" for i in range(1, n + 1)).encode()


PATCH_ADD = (
    "*** Begin Patch\n*** Add File: notes.txt\n+first line\n+second line\n"
    "*** Add File: old.txt\n+stale\n*** End Patch\n"
)
PATCH_EDIT = (
    "*** Begin Patch\n*** Update File: notes.txt\n*** Move to: renamed.txt\n@@\n first line\n"
    "-second line\n+second line, edited\n*** Delete File: old.txt\n*** End Patch\n"
)
PATCH_BAD = "*** Begin Patch\n*** Update File: missing.txt\n@@\n-absent\n+present\n*** End Patch\n"
PATCH_VIA_SHELL = "*** Begin Patch\n*** Add File: via_shell.txt\n+from the shell\n*** End Patch\n"
LOOKUP_ARGS: JSON = {"key": "alpha", "größe": 7}
PLAN = UpdatePlan(
    "Two steps: look around, then search.",
    (("Inspect the workspace", "completed"), ("Search the web", "in_progress")),
)
SEARCH_QUERY = "codex ingestor exactly once"

SEQ_N = 200_000  # `seq 1 200000` prints ~1.29 MB, over the 1 MiB line/chunk limits

TOOLS_SCENARIO = Scenario(
    "tools",
    "Every tool kind: file changes (add, update with move, delete, a patch that fails verification, "
    "a patch applied through the shell), "
    "MCP calls (a result, an isError result, a JSON-RPC error), a plan update and a web search.",
    (
        Turn(
            "Create the notes, then edit them.",
            reasoning=("Writing files with apply_patch",),
            tools=(
                ApplyPatch(PATCH_ADD),
                ApplyPatch(PATCH_EDIT),
                ApplyPatch(PATCH_BAD),
                Shell(f"apply_patch <<'EOF'\n{PATCH_VIA_SHELL}EOF"),
            ),
            message="Created notes.txt and old.txt, renamed and edited notes.txt, deleted old.txt.",
        ),
        Turn(
            "Use the fixture MCP tools.",
            tools=(
                McpCall(MCP_SERVER, "lookup", LOOKUP_ARGS),
                McpCall(MCP_SERVER, "fail_tool", {"reason": "testing"}),
                McpCall(MCP_SERVER, "broken", {}),
            ),
            message="lookup answered; fail_tool and broken failed.",
        ),
        Turn(
            "Plan, then search the web.",
            tools=(PLAN,),
            search=SEARCH_QUERY,
            message="Searched the web.",
        ),
    ),
    all_tools=True,
)
SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "multi_turn",
        "Three turns on one thread: reasoning + a command, a second command, then a plain message.",
        (
            Turn(
                "List the greeting file.",
                reasoning=("Planning: print a greeting", "Then summarise it"),
                commands=(Cmd("echo hello from turn one", stdout=b"hello from turn one\n"),),
                message="The command printed a greeting.",
            ),
            Turn(
                "Count to three.",
                reasoning=("Counting with printf",),
                commands=(Cmd("printf '1\\n2\\n3\\n'", stdout=b"1\n2\n3\n"),),
                message="Counted to three.",
            ),
            Turn("Say goodbye without using tools.", message="Goodbye! No tools were needed."),
        ),
    ),
    Scenario(
        "command_outputs",
        "One turn running a failing command, a stderr-only command and one printing non-UTF-8 bytes.",
        (
            Turn(
                "Run the three diagnostic commands.",
                reasoning=("Running diagnostics one by one",),
                commands=(
                    Cmd("echo about to fail; exit 3", exit_code=3, stdout=b"about to fail\n"),
                    Cmd("echo 'warning: written to stderr' >&2", stderr=b"warning: written to stderr\n"),
                    # FF FE looks like a UTF-16LE BOM (0.63 decodes it as UTF-16!); the Latin-1
                    # line is plain invalid UTF-8.
                    Cmd("printf '\\xff\\xfe ok\\n'", stdout=b"\xff\xfe ok\n"),
                    Cmd("printf 'caf\\xe9 \\x80 latin1\\n'", stdout=b"caf\xe9 \x80 latin1\n"),
                ),
                message="One command failed with exit code 3; the others succeeded.",
            ),
        ),
    ),
    Scenario(
        "failed_turn",
        "Turn 2's model call gets HTTP 500 (no retries) and fails; turn 3 works again.",
        (
            Turn("First, just reply.", message="First reply."),
            Turn("This turn will fail.", fail=True),
            Turn("Try again after the failure.", message="Recovered after the failed turn."),
        ),
    ),
    Scenario(
        "streamed_output",
        "A command printing a line every 0.5 s, so output arrives as deltas while it runs.",
        (
            Turn(
                "Print three ticks slowly.",
                commands=(
                    Cmd(
                        "for i in 1 2 3; do echo tick $i; sleep 0.5; done",
                        stdout=b"tick 1\ntick 2\ntick 3\n",
                    ),
                ),
                message="Three ticks printed.",
            ),
        ),
    ),
    Scenario(
        "interrupted_turn",
        "Turn 1 runs `sleep 30` and is interrupted (turn/interrupt) once it starts; turn 2 works.",
        (
            Turn(
                "Wait for a long time.",
                reasoning=("Sleeping",),
                commands=(Cmd("sleep 30", exit_code=None),),
                interrupt=True,
            ),
            Turn("Are you still there?", message="Yes, the previous turn was interrupted."),
        ),
        modes=("app-server",),
    ),
    Scenario(
        "two_threads",
        "Two threads on one app-server connection, turns alternating A, B, A.",
        (
            Turn(
                "Thread A: first turn.",
                commands=(Cmd("echo thread A", stdout=b"thread A\n"),),
                message="Thread A, turn one.",
            ),
            Turn("Thread B: first turn.", message="Thread B, turn one.", thread=1),
            Turn("Thread A: second turn.", message="Thread A, turn two."),
        ),
        modes=("app-server",),
    ),
    Scenario(
        "large_output",
        f"One command printing {len(_seq_bytes(SEQ_N))} bytes (`seq 1 {SEQ_N}`).",
        (
            Turn(
                "Print a long sequence.",
                commands=(Cmd(f"seq 1 {SEQ_N}", stdout=_seq_bytes(SEQ_N)),),
                message="Printed the sequence.",
            ),
        ),
    ),
    TOOLS_SCENARIO,
    Scenario(
        "tui_commands",
        "The interactive TUI (in tmux): two typed prompts, each running a command, then replying.",
        (
            Turn(
                "Run the greeting command.",
                reasoning=("Checking the greeting",),
                commands=(Cmd("echo hello from the tui", stdout=b"hello from the tui\n"),),
                message="The TUI ran the greeting.",
            ),
            Turn(
                "Now count to two.",
                commands=(Cmd("printf '1\\n2\\n'", stdout=b"1\n2\n"),),
                message="Counted to two in the TUI.",
            ),
        ),
        modes=(TUI,),
        versions=("0.169.0",),  # 0.63's TUI is not driven here
    ),
    Scenario(
        "subagent",
        "A turn that spawns a sub-agent with the thread's history (spawn_agent, fork_context), which "
        "replies on a thread of its own; then the parent replies.",
        (
            Turn(
                "Ask a sub-agent to say hi.",
                tools=(SpawnAgent("Say hi from the sub-agent.", fork_context=True),),
                message="The sub-agent is on it.",
            ),
            Turn("Say hi from the sub-agent.", message="Hi from the sub-agent.", thread=1, spawned_by=0),
        ),
        modes=("app-server",),  # exec ends with the parent's turn, cutting the sub-agent's short
        versions=("0.169.0",),  # 0.63 has no sub-agents
    ),
    Scenario(
        "forked_thread",
        "A thread's first turn (a command), then a fork of it (thread/fork) with a turn of its own, "
        "then the parent's second turn.",
        (
            Turn(
                "Before the fork: greet.",
                reasoning=("Greeting first",),
                commands=(Cmd("echo before the fork", stdout=b"before the fork\n"),),
                message="Greeted before the fork.",
            ),
            Turn("In the fork: say where you are.", message="This is the fork.", thread=1, fork_of=0),
            Turn("Back in the parent.", message="The parent goes on."),
        ),
        modes=("app-server",),
        versions=("0.169.0",),  # 0.63's app-server has no thread/fork
    ),
    Scenario(
        "resumed_run",
        "A first `codex exec` run, then `codex exec resume <thread id>`: two processes, one thread "
        "(observed.exec_run_bytes: each process's part of the stream).",
        (
            Turn(
                "Start the work.",
                reasoning=("Starting: print a marker",),
                commands=(Cmd("echo first run", stdout=b"first run\n"),),
                message="The first run printed its marker.",
            ),
            Turn(
                "Continue the work.",
                reasoning=("Resuming: print another marker",),
                commands=(Cmd("echo second run", stdout=b"second run\n"),),
                message="The resumed run printed its marker.",
            ),
        ),
        modes=("exec",),
        resume_by_id=True,
    ),
)


# A model from each version's bundled catalog: with an unknown slug 0.169 offers neither apply_patch
# nor update_plan.
TOOL_MODELS: dict[str, str] = {"0.169.0": "gpt-5.5", "0.63.0": "gpt-5.1-codex"}


def tool_config(version: str) -> str:
    """config.toml additions that make this version offer update_plan, web search and the MCP server
    (0.169 searches by default and warns about the 0.63 switch)."""
    server = HERE / "mcp_server.py"
    return (
        ("\n[features]\nweb_search_request = true\n" if version == "0.63.0" else "")
        + "\n[tools.update_plan]\nenabled = true\n"
        f"\n[mcp_servers.{MCP_SERVER}]\n"
        f"command = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(server))}]\n"
    )


def _usage(call_no: int) -> Usage:
    # Distinct per model call so cumulative vs. last-call totals are distinguishable in tests.
    return Usage(
        input_tokens=1000 + 100 * call_no,
        cached_input_tokens=200 * (call_no > 1),
        output_tokens=20 + 5 * call_no,
        reasoning_output_tokens=3 * call_no,
    )


def _rate_limits(call_no: int) -> RateLimits:
    return RateLimits(primary_used_percent=10.0 + call_no, secondary_used_percent=40.0 + call_no / 2)


def turn_steps(turn: Turn, first_call_no: int) -> list[Step]:
    """The model-server steps for one turn. A turn with a reasoning summary emits it in its first
    model call; each command gets its own call (0.63 stalls on parallel calls); the message comes
    last, or the failing HTTP 500 takes its place."""
    reasoning: list[Reasoning] = [Reasoning(*turn.reasoning)] if turn.reasoning else []
    steps: list[Step] = []
    for cmd in turn.commands:
        steps.append(Step([*reasoning, Shell(cmd.command)]))
        reasoning = []
    for tool in turn.tools:
        steps.append(Step([*reasoning, tool]))
        reasoning = []
    search: list[WebSearch] = [WebSearch(turn.search)] if turn.search else []
    if turn.interrupt:
        pass  # interrupted while the command runs: no further model call
    elif turn.fail:
        steps.append(Step(HttpError(500, "scripted failure for a failed-turn fixture")))
    else:
        steps.append(Step([*reasoning, *search, Message(turn.message or "")]))
    return [
        Step(s.items, _usage(first_call_no + i), _rate_limits(first_call_no + i)) for i, s in enumerate(steps)
    ]


def script(scenario: Scenario) -> list[list[Step]]:
    out: list[list[Step]] = []
    call_no = 1
    # A sub-agent calls the model beside its parent: each step then goes to its own thread's calls.
    routed = any(turn.spawned_by is not None for turn in scenario.turns)
    for turn in scenario.turns:
        steps = turn_steps(turn, call_no)
        call_no += len(steps)
        out.append([replace(step, thread=turn.thread) for step in steps] if routed else steps)
    return out


def _bytes_fact(data: bytes) -> JSON:
    try:
        text: str | None = data.decode()
    except UnicodeDecodeError:
        text = None
    fact: JSON = {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if len(data) <= 4096:
        fact["text"] = text
        fact["base64"] = base64.b64encode(data).decode()
    return fact


def facts(scenario: Scenario, version: str) -> JSON:
    """What the recording is known to contain, derived from the script alone."""
    turns: list[JSON] = []
    thread_count = 1 + max(t.thread for t in scenario.turns)
    keys = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")
    # Codex reports cumulative usage per thread; a failed (HTTP 500) call adds nothing. A fork's
    # totals start from its parent's at the fork (its file does not copy the parent's lines).
    usage_by_thread = [dict.fromkeys(keys, 0) for _ in range(thread_count)]
    forked_from: list[int | None] = [None] * thread_count
    for turn, steps in zip(scenario.turns, script(scenario), strict=True):
        if turn.fork_of is not None:
            usage_by_thread[turn.thread] = dict(usage_by_thread[turn.fork_of])
            forked_from[turn.thread] = turn.fork_of
        calls: list[JSON] = []
        for step in steps:
            ok = not isinstance(step.items, HttpError)
            if ok:
                for key in keys:
                    usage_by_thread[turn.thread][key] += getattr(step.usage, key)
            calls.append(
                {
                    "http_status": 200 if ok else 500,
                    "usage": step.usage.to_json() if ok else None,
                    "rate_limit_headers": step.rate_limits.headers() if step.rate_limits else None,
                }
            )
        turns.append(
            {
                "prompt": turn.prompt,
                "failed": turn.fail,
                "interrupted": turn.interrupt,
                "thread_index": turn.thread,
                "reasoning_summary": list(turn.reasoning),
                "commands": [
                    {
                        "command": c.command,
                        # What the model server sends for this version's shell tool.
                        "tool_call": _tool_call(c.command, version),
                        "exit_code": c.exit_code,
                        "stdout": _bytes_fact(c.stdout),
                        "stderr": _bytes_fact(c.stderr),
                    }
                    for c in turn.commands
                ],
                "agent_messages": []
                if turn.fail or turn.interrupt or turn.message is None
                else [turn.message],
                "model_calls": calls,
                # Only in scenarios with other tools, so the older scenarios' facts stay as recorded.
                **({"tools": [_tool_fact(tool) for tool in turn.tools]} if turn.tools else {}),
                **({"web_searches": [turn.search]} if turn.search else {}),
                **({"spawned_by": turn.spawned_by} if turn.spawned_by is not None else {}),
            }
        )
    return {
        "turn_count": len(turns),
        "failed_turns": [i for i, t in enumerate(scenario.turns) if t.fail],
        "interrupted_turns": [i for i, t in enumerate(scenario.turns) if t.interrupt],
        "thread_count": thread_count,
        "usage_total_by_thread": usage_by_thread,
        "turns": turns,
        # Only in scenarios with forks, so the older scenarios' facts stay as recorded.
        **({"forked_from_by_thread": forked_from} if any(i is not None for i in forked_from) else {}),
    }


def _patch_paths(patch: str) -> list[JSON]:
    """The (path, kind, move_path) of each file of an apply_patch text."""
    changes: list[JSON] = []
    for line in patch.splitlines():
        for marker, kind in (
            ("*** Add File: ", "add"),
            ("*** Update File: ", "update"),
            ("*** Delete File: ", "delete"),
        ):
            if line.startswith(marker):
                changes.append({"path": line[len(marker) :], "kind": kind})
        if line.startswith("*** Move to: "):
            changes[-1]["move_path"] = line[len("*** Move to: ") :]
    return changes


def _tool_fact(tool: ToolCall) -> JSON:
    if isinstance(tool, (ApplyPatch, Shell)):
        patch = tool.patch if isinstance(tool, ApplyPatch) else PATCH_VIA_SHELL
        return {
            "kind": "file",
            "patch": patch,
            "changes": _patch_paths(patch),
            "applies": patch != PATCH_BAD,
            "via_shell": isinstance(tool, Shell),
        }
    if isinstance(tool, SpawnAgent):
        return {"kind": "spawn_agent", "message": tool.message, "fork_context": tool.fork_context}
    if isinstance(tool, McpCall):
        fact: JSON = {"kind": "mcp", "server": tool.server, "tool": tool.tool, "arguments": tool.arguments}
        if tool.tool == "lookup":
            fact["result"] = lookup_result(tool.arguments)
        elif tool.tool == "fail_tool":
            fact["is_error_text"] = FAIL_TEXT
        else:
            fact["rpc_error"] = BROKEN_ERROR
        return fact
    return {
        "kind": "plan",
        "explanation": tool.explanation,
        "plan": [{"step": step, "status": status} for step, status in tool.plan],
    }


def _tool_call(command: str, version: str) -> JSON:
    if version == "0.63.0":
        return {"name": "shell", "arguments": {"command": ["bash", "-c", command]}}
    return {"name": "exec_command", "arguments": {"cmd": command}}


# --------------------------------------------------------------------------------------------
# Running Codex


@dataclass
class Run:
    """Throwaway CODEX_HOME + cwd + model server for one recording."""

    version: str
    scenario: Scenario
    home: Path
    cwd: Path
    server: ModelServer
    stderr_log: Path

    def argv(self, *args: str) -> list[str]:
        try:
            return [*codex_argv(self.version), *args]
        except CodexNotInstalled as exc:
            raise RecordError(str(exc)) from None

    def env(self) -> dict[str, str]:
        # A minimal, fixed environment: no real credentials or user config can leak in, and
        # login-shell profiles from the real HOME cannot add output to commands.
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "CODEX_HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            "NO_COLOR": "1",
            "RUST_LOG": os.environ.get("RECORD_RUST_LOG", "warn"),
        }


@contextlib.contextmanager
def prepared_run(version: str, mode: str, scenario: Scenario, keep: bool) -> Iterator[Run]:
    root = Path(tempfile.mkdtemp(prefix=f"codex-rec-{version}-{scenario.name}-"))
    home, cwd = root / "home", root / "cwd"
    home.mkdir()
    cwd.mkdir()
    server = ModelServer([], name=scenario.name, side_answer=TUI_TITLE if mode == TUI else None)
    with server:
        if scenario.all_tools:
            config = codex_config_toml(
                server.base_url, model=TOOL_MODELS[version], extra=tool_config(version)
            )
        else:
            config = codex_config_toml(server.base_url)
        (home / "config.toml").write_text(config)
        try:
            yield Run(version, scenario, home, cwd, server, root / "stderr.log")
        finally:
            if keep:
                log.info("kept %s", root)
            else:
                shutil.rmtree(root, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Codex runs as node -> native binary -> shells; end the whole process group we started."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _stderr_tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class AppServer:
    """Drives ``codex app-server`` over stdio, keeping every stdout line byte-exact."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._stderr: IO[bytes] = run.stderr_log.open("ab")
        self.proc = subprocess.Popen(
            run.argv("app-server"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=run.env(),
            cwd=run.cwd,
            start_new_session=True,
        )
        self.lines: list[bytes] = []
        self._inbox: queue.Queue[JSON | None] = queue.Queue()
        self._next_id = 0
        self.server_requests: list[str] = []
        self._reader = threading.Thread(target=self._read, name="app-server-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw)
            try:
                msg = json.loads(raw)
            except ValueError:
                log.warning("non-JSON stdout line: %r", raw[:200])
                continue
            if isinstance(msg, dict):
                self._inbox.put(msg)
        self._inbox.put(None)  # EOF

    def _send(self, msg: JSON) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def _next(self, deadline: float) -> JSON | None:
        """Next message, answering server requests on the way; None on EOF. Raises on timeout."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            try:
                msg = self._inbox.get(timeout=remaining)
            except queue.Empty:
                raise TimeoutError from None
            if msg is None:
                return None
            if "method" in msg and "id" in msg:
                self._answer(msg)
            return msg

    def _answer(self, req: JSON) -> None:
        """Approve everything: the scenarios run harmless commands in a throwaway directory, and
        approvalPolicy "never" should mean no request arrives at all."""
        method = str(req["method"])
        self.server_requests.append(method)
        log.warning("server request %s (unexpected with approvalPolicy=never)", method)
        result: JSON
        if method in ("item/commandExecution/requestApproval", "item/fileChange/requestApproval"):
            result = {"decision": "accept"}
        elif method in ("execCommandApproval", "applyPatchApproval"):
            result = {"decision": "approved"}
        else:
            self._send({"id": req["id"], "error": {"code": -32601, "message": f"unsupported: {method}"}})
            return
        self._send({"id": req["id"], "result": result})

    def request(self, method: str, params: JSON | None, timeout: float = 60.0) -> JSON:
        self._next_id += 1
        req_id = self._next_id
        msg: JSON = {"id": req_id, "method": method}
        if params is not None:
            msg["params"] = params
        self._send(msg)
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self._next(deadline)
            except TimeoutError:
                raise RecordError(f"no response to {method} within {timeout}s") from None
            if got is None:
                raise RecordError(f"app-server exited while waiting for {method}")
            if got.get("id") == req_id and "method" not in got:
                if "error" in got:
                    raise RecordError(f"{method} failed: {got['error']}")
                result = got.get("result")
                return result if isinstance(result, dict) else {}

    def notify(self, method: str, params: JSON | None = None) -> None:
        msg: JSON = {"method": method}
        if params is not None:
            msg["params"] = params
        self._send(msg)

    def wait_for(self, what: str, match: Callable[[str, JSON], str | None], timeout: float) -> str:
        """Read until ``match(method, params)`` returns a label; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self._next(deadline)
            except TimeoutError:
                raise RecordError(f"no {what} within {timeout}s") from None
            if msg is None:
                raise RecordError(f"app-server exited while waiting for {what}")
            method, params = msg.get("method"), msg.get("params")
            if isinstance(method, str) and isinstance(params, dict):
                label = match(method, params)
                if label is not None:
                    return label

    def wait_turn_end(self, thread_id: str, turn_id: str | None, timeout: float) -> str:
        """Read until this turn visibly ends, then until the server goes quiet. Returns the marker
        that ended it. Several are accepted because versions differ: 0.169 sends
        ``thread/status/changed`` (idle/systemError) just *before* ``turn/completed``, 0.63 sends
        legacy ``codex/event/task_complete`` before it, and ``turn/completed`` has been seen missing."""

        def match(method: str, params: JSON) -> str | None:
            if method == "turn/completed":
                tid = (params.get("turn") or {}).get("id")
                return method if turn_id is None or tid == turn_id else None
            if method == "thread/status/changed":
                ended = (params.get("status") or {}).get("type") in ("idle", "systemError")
                return method if ended and params.get("threadId") == thread_id else None
            if method in ("codex/event/task_complete", "codex/event/turn_aborted"):
                return method if params.get("conversationId", thread_id) == thread_id else None
            return None

        marker = self.wait_for(f"end of turn {turn_id}", match, timeout)
        self.drain_quiet()
        return marker

    def drain_quiet(self) -> None:
        end = time.monotonic() + QUIET_MAX_S
        while time.monotonic() < end:
            try:
                msg = self._next(time.monotonic() + QUIET_S)
            except TimeoutError:
                return
            if msg is None:
                return

    def close(self) -> None:
        """EOF on stdin asks the server to exit; whatever it still prints is recorded."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=15)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            log.warning("app-server did not exit on stdin EOF; terminating")
        finally:
            _kill_group(self.proc)
            self._reader.join(timeout=10)
            self._stderr.close()


def _command_started(method: str, params: JSON) -> str | None:
    if method == "item/started" and (params.get("item") or {}).get("type") == "commandExecution":
        return method
    return method if method == "codex/event/exec_command_begin" else None


def typed_turns(scenario: Scenario) -> list[tuple[Turn, list[Step]]]:
    """The turns whose prompt is typed, each with its model-server steps and those of the sub-agents
    it spawns (which run during it)."""
    typed: list[tuple[Turn, list[Step]]] = []
    for turn, steps in zip(scenario.turns, script(scenario), strict=True):
        if turn.spawned_by is None:
            typed.append((turn, steps))
        else:
            typed[-1][1].extend(steps)
    return typed


def record_app_server(run: Run) -> tuple[bytes, JSON]:
    app = AppServer(run)
    observed: JSON = {"turn_end_markers": []}
    try:
        app.request(
            "initialize",
            {
                "clientInfo": {
                    "name": "codex-ingestor-recorder",
                    "title": "codex-ingestor fixtures",
                    "version": "0.1.0",
                }
            },
        )
        app.notify("initialized")
        threads: list[str] = []
        for turn, steps in typed_turns(run.scenario):
            while len(threads) <= turn.thread:
                if turn.fork_of is not None and len(threads) == turn.thread:
                    thread = app.request("thread/fork", {"threadId": threads[turn.fork_of]})
                else:
                    thread = app.request(
                        "thread/start",
                        {
                            "cwd": str(run.cwd),
                            "approvalPolicy": "never",
                            "sandbox": SANDBOX[run.version],
                        },
                    )
                new_id = (thread.get("thread") or {}).get("id")
                if not isinstance(new_id, str):
                    raise RecordError(f"thread/start returned no thread id: {thread}")
                threads.append(new_id)
                app.drain_quiet()  # keep thread start-up notifications ahead of the turn
            thread_id = threads[turn.thread]
            run.server.push(*steps)
            started = app.request(
                "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": turn.prompt}]}
            )
            turn_id = (started.get("turn") or {}).get("id")
            turn_id = turn_id if isinstance(turn_id, str) else None
            if turn.interrupt:
                app.wait_for("command start", _command_started, TURN_TIMEOUT_S)
                time.sleep(0.5)  # let the command really run, so the interrupt has to kill it
                app.request("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})
            marker = app.wait_turn_end(thread_id, turn_id, TURN_TIMEOUT_S)
            observed["turn_end_markers"].append(marker)
            if any(t.spawned_by == turn.thread for t in run.scenario.turns):
                # Sub-agents tell this connection nothing: wait for their model calls, then quiet.
                deadline = time.monotonic() + TURN_TIMEOUT_S
                while run.server.remaining and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(QUIET_S)
                app.drain_quiet()
            if run.server.remaining:
                raise RecordError(f"turn ended with {run.server.remaining} scripted steps unused")
    except RecordError as exc:
        raise RecordError(f"{exc}\n--- codex stderr ---\n{_stderr_tail(run.stderr_log)}") from None
    finally:
        app.close()
    observed["server_requests"] = app.server_requests
    return b"".join(app.lines), observed


TUI_TITLE = "Scripted task"
"""The TUI's side request for a task title gets this (model_server.ModelServer.side_answer)."""
TUI_READY = "Ask Codex to do anything"
TUI_TURN_DONE = "Worked for"
TUI_SIZE = ("160", "45")


class Tui:
    """``codex`` (the interactive TUI) in a detached tmux session on a server of its own."""

    def __init__(self, run: Run) -> None:
        if shutil.which("tmux") is None:
            raise RecordError("the tui mode needs tmux (apt-get install tmux)")
        self.run = run
        self.socket = f"codex-rec-{os.getpid()}"
        env = {**run.env(), "TERM": "xterm-256color"}
        command = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *run.argv()]
        width, height = TUI_SIZE
        self._tmux(
            "new-session", "-d", "-s", "codex", "-x", width, "-y", height, "-c", str(run.cwd), *command
        )

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RecordError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "codex")

    def wait_screen(self, what: str, count: int, timeout: float) -> None:
        """Until the screen shows `what` at least `count` times."""
        deadline = time.monotonic() + timeout
        while self.screen().count(what) < count:
            if time.monotonic() > deadline:
                raise RecordError(f"the TUI never showed {what!r} x{count}; screen:\n{self.screen()}")
            time.sleep(0.5)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "codex", "-l", text)
        time.sleep(0.5)  # a paste-burst guard keeps an Enter that follows typed text too closely
        self._tmux("send-keys", "-t", "codex", "C-m")

    def close(self) -> None:
        """End the tmux server and the app-server daemon the TUI leaves running (its binary lives
        under this run's CODEX_HOME, which is how it is found: only what this run started)."""
        with contextlib.suppress(RecordError):
            self._tmux("kill-server")
        home = str(self.run.home).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if home in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGTERM)


def record_tui(run: Run) -> tuple[bytes, JSON]:
    tui = Tui(run)
    try:
        tui.wait_screen(TUI_READY, 1, 60)
        for number, (turn, steps) in enumerate(zip(run.scenario.turns, script(run.scenario), strict=True), 1):
            run.server.push(*steps)
            tui.type(turn.prompt)
            tui.wait_screen(TUI_TURN_DONE, number, TURN_TIMEOUT_S)
            if run.server.remaining:
                raise RecordError(f"turn ended with {run.server.remaining} scripted steps unused")
        screen = tui.screen()
        tui.type("/quit")  # the session file is written out when the TUI leaves
        deadline = time.monotonic() + 30
        while not list((run.home / "sessions").rglob("rollout-*.jsonl")):
            if time.monotonic() > deadline:
                raise RecordError("the TUI wrote no session file")
            time.sleep(0.5)
        time.sleep(1)
    finally:
        tui.close()
    lines = [line.rstrip() for line in screen.splitlines() if line.strip() and "\u28ff" not in line]
    return b"", {"side_requests": run.server.side_requests, "screen": lines}


def _exec_thread_id(stdout: bytes) -> str:
    for line in stdout.splitlines():
        event = json.loads(line)
        if event.get("type") == "thread.started":
            return str(event["thread_id"])
    raise RecordError("the first exec run printed no thread.started")


def record_exec(run: Run) -> tuple[bytes, JSON]:
    out = bytearray()
    exit_codes: list[int] = []
    run_bytes: list[int] = []
    for index, (turn, steps) in enumerate(typed_turns(run.scenario)):
        run.server.push(*steps)
        if index == 0:
            args = ["exec", "--json", "--skip-git-repo-check", "-C", str(run.cwd), turn.prompt]
        else:
            which = [_exec_thread_id(bytes(out))] if run.scenario.resume_by_id else ["--last"]
            args = ["exec", "--json", "--skip-git-repo-check", "-C", str(run.cwd), "resume", *which]
            args.append(turn.prompt)
        with run.stderr_log.open("ab") as err:
            proc = subprocess.Popen(
                run.argv(*args),
                stdin=subprocess.DEVNULL,  # else exec waits for "additional input from stdin"
                stdout=subprocess.PIPE,
                stderr=err,
                env=run.env(),
                cwd=run.cwd,
                start_new_session=True,
            )
            try:
                stdout, _ = proc.communicate(timeout=TURN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise RecordError(
                    f"codex exec timed out\n--- codex stderr ---\n{_stderr_tail(run.stderr_log)}"
                ) from None
            finally:
                _kill_group(proc)
        out += stdout
        run_bytes.append(len(stdout))
        exit_codes.append(proc.returncode)
        if run.server.remaining:
            raise RecordError(
                f"exec turn {index} left {run.server.remaining} steps unused (exit {proc.returncode})\n"
                f"--- codex stderr ---\n{_stderr_tail(run.stderr_log)}"
            )
    return bytes(out), {"exec_exit_codes": exit_codes, "exec_run_bytes": run_bytes}


# --------------------------------------------------------------------------------------------
# Output


def version_dir(version: str) -> Path:
    return FIXTURES / f"codex-{version}"


def rel(path: Path) -> str:
    return path.relative_to(FIXTURES).as_posix()


def record_one(version: str, mode: str, scenario: Scenario, keep: bool) -> list[JSON]:
    """Record one (version, mode, scenario); returns its manifest entries."""
    log.info("recording codex %s %s %s", version, mode, scenario.name)
    with prepared_run(version, mode, scenario, keep) as run:
        record = {"app-server": record_app_server, "exec": record_exec, TUI: record_tui}[mode]
        data, observed = record(run)
        if run.server.errors:
            raise RecordError("; ".join(run.server.errors))
        observed["tools_offered"] = sorted({t for r in run.server.requests for t in r.tool_names})
        observed["model_calls"] = len(run.server.requests)

        stream = version_dir(version) / mode / f"{scenario.name}.jsonl"
        if mode != TUI:  # the TUI's output is a screen: only its session file is kept
            stream.parent.mkdir(parents=True, exist_ok=True)
            stream.write_bytes(data)

        sessions_dir = version_dir(version) / "sessions" / f"{mode}-{scenario.name}"
        shutil.rmtree(sessions_dir, ignore_errors=True)
        session_files: list[Path] = []
        for src in sorted((run.home / "sessions").rglob("rollout-*.jsonl")):
            sessions_dir.mkdir(parents=True, exist_ok=True)
            dst = sessions_dir / src.name
            shutil.copyfile(src, dst)
            session_files.append(dst)

    known = facts(scenario, version)
    base = {
        "codex_version": version,
        "mode": mode,
        "scenario": scenario.name,
        "description": scenario.description,
    }
    entries: list[JSON] = []
    if mode != TUI:
        entries.append(
            {
                **base,
                "path": rel(stream),
                "kind": "stream",
                "bytes": len(data),
                "facts": known,
                "observed": observed,
            }
        )
    entries += [
        {
            **base,
            "path": rel(p),
            "kind": "session",
            "bytes": p.stat().st_size,
            "facts": known,
            **({"observed": observed} if mode == TUI else {}),
        }
        for p in session_files
    ]
    log.info("  -> %s (%d bytes, %d session files)", mode, len(data), len(session_files))
    return entries


def write_manifest(new: Sequence[JSON]) -> None:
    """Merge: entries for re-recorded (version, mode, scenario) replace the old ones, so a partial
    re-record keeps the rest of the manifest valid."""
    done = {(e["codex_version"], e["mode"], e["scenario"]) for e in new}
    old: list[JSON] = []
    if MANIFEST.exists():
        old = [
            e
            for e in json.loads(MANIFEST.read_text())["files"]
            if (e["codex_version"], e["mode"], e["scenario"]) not in done and (FIXTURES / e["path"]).exists()
        ]
    files = sorted(
        [*old, *new], key=lambda e: (e["codex_version"], e["mode"], e["scenario"], e["kind"], e["path"])
    )
    manifest = {
        "schema": 1,
        "generated_by": "testing/codex/record.py",
        "versions": {v: f"@openai/codex@{v}" for v in VERSIONS},
        "files": files,
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def check_manifest() -> list[str]:
    """Problems with fixtures/ as it stands (no Codex needed): missing or resized files, lines that
    are not JSON, scenarios without a recording, facts that no longer match the script."""
    problems: list[str] = []
    entries: list[JSON] = json.loads(MANIFEST.read_text())["files"] if MANIFEST.exists() else []
    # A recording is its stream; the TUI's is its session file.
    streams = {
        (e["codex_version"], e["mode"], e["scenario"])
        for e in entries
        if e["kind"] == "stream" or e["mode"] == TUI
    }
    by_name = {s.name: s for s in SCENARIOS}
    for version in VERSIONS:
        for scenario in SCENARIOS:
            problems += [
                f"no {mode} recording of {scenario.name} for {version}"
                for mode in scenario.modes
                if version in scenario.versions and (version, mode, scenario.name) not in streams
            ]
    for e in entries:
        path = FIXTURES / e["path"]
        if not path.is_file():
            problems.append(f"{e['path']}: missing")
            continue
        data = path.read_bytes()
        if len(data) != e["bytes"]:
            problems.append(f"{e['path']}: {len(data)} bytes, manifest says {e['bytes']}")
        if not data.endswith(b"\n"):
            problems.append(f"{e['path']}: last line not terminated")
        for number, line in enumerate(data.splitlines(), 1):
            try:
                json.loads(line)
            except ValueError:
                problems.append(f"{e['path']}:{number}: not JSON")
                break
        known = by_name.get(e["scenario"])
        if known is None or e["facts"] != facts(known, e["codex_version"]):
            problems.append(f"{e['path']}: facts differ from the current script: re-record")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="append", choices=sorted(VERSIONS), help="default: all")
    parser.add_argument("--mode", action="append", choices=(*MODES, TUI), help="default: all")
    parser.add_argument(
        "--scenario", action="append", choices=[s.name for s in SCENARIOS], help="default: all"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp CODEX_HOME/cwd for debugging")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--check", action="store_true", help="only validate fixtures/ against the manifest")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )

    if args.check:
        problems = check_manifest()
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"fixtures: {len(problems)} problem(s)")
        return 1 if problems else 0

    entries: list[JSON] = []
    failures: list[str] = []
    for version in args.version or VERSIONS:
        for mode in args.mode or (*MODES, TUI):
            for scenario in SCENARIOS:
                if (
                    (args.scenario and scenario.name not in args.scenario)
                    or mode not in scenario.modes
                    or version not in scenario.versions
                ):
                    continue
                try:
                    entries += record_one(version, mode, scenario, args.keep)
                except RecordError as exc:
                    failures.append(f"{version} {mode} {scenario.name}: {exc}")
                    log.error("FAILED %s", failures[-1])
    write_manifest(entries)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
