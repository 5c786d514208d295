"""The normalizer: Codex event lines in, operations (docs/operations.md) out. Pure: no I/O, no clock.

One `Normalizer` per input stream::

    n = Normalizer("file:/tmp/run.jsonl")
    for line in lines:
        sink(n.feed(line))  # or n.feed_into(line, ops), appending to a list of one's own
    sink(n.finish())

Every line yields exactly one `appendEvent` (also lines that are not JSON, see raw.py), plus the facts
it carries (turns, commands, output chunks, messages, reasoning, usage, rate limits). The stream kind is
decided per line (detect.py), so a tap that mixes app-server v2 notifications with the legacy
`codex/event/*` copies of the same facts stores each fact once.

The conversation id is, first match wins:

1. the constructor's `conversation_id`;
2. a first line `{"type": "ingestor.hello", "conversationId": "...", "clientName"?: "...",
   "modelProvider"?: "..."}`: what a socket producer sends before relaying Codex's output, to file it
   under its own conversation (e.g. the chat that ran Codex) and name itself. The hello line is stored
   as a raw event like any other;
3. the Codex thread id (`thread/started`, exec `thread.started`, `session_meta`, legacy
   `conversationId`).

Lines before the id is known (e.g. the `initialize` response) are held, at most 10,000 lines or 64 MiB,
and emitted once it is known; when the bound is reached or the stream ends first, the conversation id
is `source:<the source name>`.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from ingestor.lines import Line
from ingestor.normalize import app_server, exec_json, legacy, session_file
from ingestor.normalize.detect import BAD, HELLO, IDMSG, LEGACY_PREFIX, RPC, classify
from ingestor.normalize.facts import _MAX_NUMBER, _MS_THRESHOLD, conversation, epoch_ms, iso_ms
from ingestor.normalize.facts import turn_key as facts_turn_key
from ingestor.normalize.raw import event_op, parse
from ingestor.normalize.state import EXEC, LEGACY, SESSION, V2, Ops, State
from ingestor.ops import Op

__all__ = ["Normalizer"]

_loads: Final = orjson.loads
_V2_HANDLERS: Final = app_server.HANDLERS
_JSONDecodeError: Final = orjson.JSONDecodeError

MAX_PENDING_LINES: Final = 10_000
MAX_PENDING_BYTES: Final = 64 * 1024 * 1024


def _get(obj: Any, *path: str) -> Any:
    for name in path:
        if type(obj) is not dict:
            return None
        obj = obj.get(name)
    return obj


def revealed_id(kind: str, method: str, obj: Any) -> str | None:
    """The conversation id a line reveals, if any (only asked while it is unknown)."""
    found: Any = None
    if kind == HELLO:
        found = _get(obj, "conversationId")
    elif kind == V2 and method == "thread/started":
        found = _get(obj, "params", "thread", "id")
    elif kind == RPC:
        found = _get(obj, "result", "thread", "id")
    elif kind == LEGACY:
        found = _get(obj, "params", "conversationId") or _get(obj, "params", "msg", "session_id")
    elif kind == IDMSG:
        found = _get(obj, "msg", "session_id")
    elif kind == EXEC and method == "thread.started":
        found = _get(obj, "thread_id")
    elif kind == SESSION and method == "session_meta":
        found = _get(obj, "payload", "id")
    return found if type(found) is str and found else None


def line_time(line: Line, kind: str, obj: Any) -> int:
    """When a line's event happened: Codex's own time where the line has one (0.169 notifications'
    `emittedAtMs`, session files' `timestamp`, so a replay stores the original times), else when the
    line arrived."""
    if kind == V2:
        return epoch_ms(obj.get("emittedAtMs")) or line.received_at
    if kind == SESSION:
        return iso_ms(obj.get("timestamp")) or line.received_at
    return line.received_at


def line_thread(kind: str, method: str, obj: Any) -> str | None:
    """The Codex thread a line names, if any: an app-server may serve several threads at once."""
    found: Any = None
    if kind == V2:
        params = obj.get("params")
        if type(params) is dict:
            found = params.get("threadId")
            if found is None and method == "thread/started":
                found = _get(params, "thread", "id")
    elif kind == LEGACY:
        found = _get(obj, "params", "conversationId")
    elif kind == RPC:
        found = _get(obj, "result", "thread", "id")
    elif kind == EXEC and method == "thread.started":
        found = obj.get("thread_id")
    return found if type(found) is str and found else None


class Normalizer:
    def __init__(self, source: str, *, conversation_id: str | None = None) -> None:
        self._s = State(source=source)
        self._last_line: Line | None = None
        self.derive_errors = 0
        """Lines whose facts could not be read (kept raw only): a number worth a metric."""
        if conversation_id is not None:
            self._s.fixed_conversation = conversation_id
            self._s.start(conversation_id)

    def feed(self, line: Line) -> list[Op]:
        """The operations of one line."""
        out: Ops = []
        self.feed_into(line, out)
        return out

    def feed_into(self, line: Line, out: Ops) -> None:
        """`feed`, appending to `out`: the pipeline's per-line call, spared a list per line."""
        # `raw.parse` and `detect.classify`, with the common case (a JSON-RPC notification) inline.
        obj: Any = None
        if line.oversize is None:
            try:
                obj = _loads(line.data)
            except _JSONDecodeError:
                kind, method, obj = parse(line)
            else:
                found = obj.get("method") if type(obj) is dict else None
                if type(found) is str:
                    if not found.startswith(LEGACY_PREFIX):
                        if self._s.cur is not None:
                            self._last_line = line
                            self._process_v2(line, found, obj, out)
                            return
                        kind, method = V2, found
                    else:
                        kind, method = LEGACY, found
                else:
                    kind, method = classify(obj)
        else:
            kind, method, obj = parse(line)
        s = self._s
        self._last_line = line
        if s.cur is not None:
            self._process(line, kind, method, obj, out)
            return
        cid = revealed_id(kind, method, obj)
        if cid is None:
            s.pending.append((line, kind, method, obj))
            s.pending_bytes += len(line.data)
            if len(s.pending) >= MAX_PENDING_LINES or s.pending_bytes >= MAX_PENDING_BYTES:
                out.extend(self._release(f"source:{s.source}"))
            return
        if kind == HELLO:
            s.fixed_conversation = cid
        s.pending.append((line, kind, method, obj))
        out.extend(self._release(cid))

    def finish(self) -> list[Op]:
        s = self._s
        last = self._last_line
        if last is None:
            return []
        out: Ops = []
        if s.conversation_id is None:
            out = self._release(f"source:{s.source}")
        session_file.close_inferred_turn(s, last, out, s.last_at)
        # The final activity time: lastSeenAt otherwise only moves on turn boundaries.
        conversation(s, last, out, s.last_at)
        return out

    def _release(self, conversation_id: str) -> Ops:
        s = self._s
        s.start(conversation_id)
        held, s.pending, s.pending_bytes = s.pending, [], 0
        out: Ops = []
        first, kind, _, obj = held[0]
        conversation(s, first, out, line_time(first, kind, obj), first=True)
        for line, kind, method, obj in held:
            self._process(line, kind, method, obj, out)
        return out

    def _process(self, line: Line, kind: str, method: str, obj: Any, out: Ops) -> None:
        s = self._s
        derived: Ops = []
        at = s.last_at = line_time(line, kind, obj)
        thread = line_thread(kind, method, obj)
        if thread is not None and s.enter_thread(thread):
            conversation(s, line, derived, at)
        cur = s.cur
        assert cur is not None
        s.line_turn = cur.turn_id if cur.turn_active else None
        try:
            self._derive(line, kind, method, obj, derived)
        except Exception:
            # Codex's shapes keep changing: a line whose facts can't be read is still stored raw, and
            # the stream goes on. Tests feed arbitrary JSON and mutated recordings and expect no errors.
            self.derive_errors += 1
            derived = []
        # The raw event goes first; its turn is only known once the line's facts are read (which may
        # also have switched threads).
        out.append(event_op(s.cur or cur, line, method, obj, s.line_turn, kind != BAD))
        out.extend(derived)

    def _process_v2(self, line: Line, method: str, obj: dict[str, Any], out: Ops) -> None:
        """`_process` for an app-server v2 line (most lines), with `line_time`, `line_thread` and the
        dispatch of `app_server.handle` inline; the same steps in the same order."""
        s = self._s
        emitted = obj.get("emittedAtMs")
        if type(emitted) is int and _MS_THRESHOLD <= emitted <= _MAX_NUMBER:
            at = emitted  # what epoch_ms makes of a time already in ms
        else:
            at = (epoch_ms(emitted) if emitted is not None else None) or line.received_at
        s.last_at = at
        cur = s.cur
        assert cur is not None
        params = obj.get("params")
        derived: Ops = []
        if type(params) is dict:
            thread = params.get("threadId")
            if thread is None and method == "thread/started":
                thread = _get(params, "thread", "id")
            if type(thread) is str and thread and thread != cur.thread_id:
                if s.enter_thread(thread):
                    conversation(s, line, derived, at)
                cur = s.cur  # entering a known thread switches too
                assert cur is not None
        s.line_turn = cur.turn_id if cur.turn_active else None
        if type(params) is dict:
            try:
                if s.saw_legacy and "threadId" not in params and method != "thread/started":
                    pass  # the anonymous twin of a legacy event: raw only (see app_server.handle)
                else:
                    handler = _V2_HANDLERS.get(method)
                    if handler is None:
                        tid = params.get("turnId")
                        if type(tid) is str and tid:
                            s.line_turn = tid if not tid.isdigit() else facts_turn_key(s, tid)
                    else:
                        handler(s, line, params, at, derived)
            except Exception:
                self.derive_errors += 1
                derived = []
        out.append(event_op(s.cur or cur, line, method, obj, s.line_turn, True))
        if derived:
            out.extend(derived)

    def _derive(self, line: Line, kind: str, method: str, obj: Any, out: Ops) -> None:
        s = self._s
        if kind == V2:
            app_server.handle(s, line, method, obj, out)
        elif kind == LEGACY:
            s.saw_legacy = True
            params = obj.get("params")
            if type(params) is dict:
                legacy.handle(s, line, LEGACY, params.get("msg"), params.get("id"), s.last_at, out)
        elif kind == EXEC:
            exec_json.handle(s, line, method, obj, out)
        elif kind == SESSION:
            session_file.handle(s, line, method, obj, out)
        elif kind == IDMSG:
            legacy.handle(s, line, LEGACY, obj.get("msg"), obj.get("id"), s.last_at, out)
        elif kind == RPC:
            app_server.handle_response(s, line, obj, out)
        elif kind == HELLO:
            self._hello(line, obj, out)

    def _hello(self, line: Line, obj: dict[str, Any], out: Ops) -> None:
        s = self._s
        for attr, name in (("client_name", "clientName"), ("model_provider", "modelProvider")):
            value = obj.get(name)
            if type(value) is str:
                setattr(s, attr, value)
        conversation(s, line, out, s.last_at)
