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

The conversation id this stream proposes is, first match wins:

1. the constructor's `conversation_id`;
2. a first line `{"type": "ingestor.hello", "conversationId": "...", "clientName"?: "...",
   "modelProvider"?: "..."}`: what a socket producer sends before relaying Codex's output, to file it
   under its own conversation (e.g. the chat that ran Codex) and name itself. The hello line is stored
   as a raw event like any other;
3. the Codex thread id, from any line that names it (`thread/started`, any v2 notification's
   `threadId`, exec `thread.started`, `session_meta`, legacy `conversationId`): a stream that begins in
   the middle of a thread (a restart, a reconnect) is filed with that thread.

The store has the last word: a thread stays in the first conversation it was filed under, whatever a
later stream proposes (ops name their `thread`; docs/operations.md).

Lines before the thread is known (e.g. the `initialize` response, a hello line) are held and emitted
once it is known, so that their identity (raw.event_op) is the thread's whichever way the stream was
captured: at most 10,000 lines or 64 MiB, or 64 lines or 1 MiB when the conversation is already
chosen (only their identity waits then). When the bound is reached or the stream ends first, they are
filed under the chosen conversation, or `source:<the source name>` without one.
"""

from __future__ import annotations

from typing import Any, Final, TypeGuard

import orjson

from ingestor.lines import Line
from ingestor.normalize import app_server, exec_json, legacy, session_file
from ingestor.normalize.detect import BAD, HELLO, IDMSG, LEGACY_PREFIX, RPC, UNKNOWN, classify
from ingestor.normalize.facts import (
    _MAX_NUMBER,
    _MS_THRESHOLD,
    conversation,
    epoch_ms,
    iso_ms,
    release_turnless_at_end,
)
from ingestor.normalize.facts import turn_key as facts_turn_key
from ingestor.normalize.parse_cost import CHECK_FROM_BYTES
from ingestor.normalize.raw import event_op, parse
from ingestor.normalize.state import EXEC, LEGACY, MAX_ID_CHARS, SESSION, V2, Ops, State
from ingestor.ops import Op

__all__ = ["Normalizer"]

_loads: Final = orjson.loads
_V2_HANDLERS: Final = app_server.HANDLERS
_JSONDecodeError: Final = orjson.JSONDecodeError

MAX_PENDING_LINES: Final = 10_000
MAX_PENDING_BYTES: Final = 64 * 1024 * 1024
MAX_PENDING_LINES_CHOSEN: Final = 64
MAX_PENDING_BYTES_CHOSEN: Final = 1024 * 1024
"""The bounds while the conversation is already chosen (constructor, hello line): lines are then only
held for their identity, and a Codex stream names its thread within its first few lines."""


def _get(obj: Any, *path: str) -> Any:
    for name in path:
        if type(obj) is not dict:
            return None
        obj = obj.get(name)
    return obj


def _usable_id(value: Any) -> TypeGuard[str]:
    return type(value) is str and 0 < len(value) <= MAX_ID_CHARS


def revealed_thread(kind: str, method: str, obj: Any) -> str | None:
    """The Codex thread a line names, if any (only asked while the stream's thread is unknown)."""
    known = line_thread(kind, method, obj)
    if known is not None:
        return known
    # Any: a line may hold anything there (compiled, a `str | None` variable would raise on a list).
    found: Any = None
    if kind == LEGACY:
        found = _get(obj, "params", "msg", "session_id")
    elif kind == IDMSG:
        found = _get(obj, "msg", "session_id")
    elif kind == SESSION:
        # session_meta's id; newer session files name the thread on most lines.
        found = _get(obj, "payload", "id") if method == "session_meta" else _get(obj, "payload", "thread_id")
    return found if _usable_id(found) else None


def codex_time(kind: str, obj: Any) -> int | None:
    """When a line's event happened by Codex's own clock, where the line says (0.169 notifications'
    `emittedAtMs`, session files' `timestamp`): a replay stores the original times."""
    if kind == V2:
        return epoch_ms(obj.get("emittedAtMs"))
    if kind == SESSION:
        return iso_ms(obj.get("timestamp"))
    return None


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
    return found if _usable_id(found) else None


class Normalizer:
    def __init__(self, source: str, *, conversation_id: str | None = None) -> None:
        self._s = State(source=source)
        self._last_line: Line | None = None
        self.derive_errors = 0
        """Lines whose facts could not be read (kept raw only): a number worth a metric."""
        self.bad_lines: dict[str, int] = {}
        """Lines stored raw only (not JSON, too long, or JSON no Codex stream kind explains), by method."""
        if conversation_id is not None:
            self._s.fixed_conversation = conversation_id

    def feed(self, line: Line) -> list[Op]:
        """The operations of one line."""
        out: Ops = []
        self.feed_into(line, out)
        return out

    def feed_into(self, line: Line, out: Ops) -> None:
        """`feed`, appending to `out`: the pipeline's per-line call, spared a list per line."""
        # `raw.parse` and `detect.classify`, with the common case (a JSON-RPC notification) inline.
        obj: Any = None
        # Long lines take `raw.parse`, which first asks what parsing them would cost (parse_cost.py).
        if line.oversize is None and len(line.data) < CHECK_FROM_BYTES:
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
        # Held as the line only (parsed again when released): a held line costs its bytes, not the
        # many times more its parsed value can take.
        s.pending.append(line)
        s.pending_bytes += len(line.data)
        if kind == HELLO and s.fixed_conversation is None:
            hello_id = _get(obj, "conversationId")
            if _usable_id(hello_id):
                s.fixed_conversation = hello_id
            elif hello_id is not None:
                self.derive_errors += 1  # refused: the line is kept raw, the id multiplied nowhere
        thread = revealed_thread(kind, method, obj)
        if thread is not None:
            out.extend(self._release(s.fixed_conversation or thread, thread, (kind, method, obj)))
        elif s.fixed_conversation is None:
            if len(s.pending) >= MAX_PENDING_LINES or s.pending_bytes >= MAX_PENDING_BYTES:
                out.extend(self._release(self._threadless_conversation(), None, (kind, method, obj)))
        elif len(s.pending) >= MAX_PENDING_LINES_CHOSEN or s.pending_bytes >= MAX_PENDING_BYTES_CHOSEN:
            out.extend(self._release(s.fixed_conversation, None, (kind, method, obj)))

    def end_is_a_guess(self) -> bool:
        """Whether finishing now would conclude what later lines may contradict: a Codex 0.63 session
        file names no turn ends, so `finish` closes its last turn as the file leaves it, and a turn
        without a reply yet, or with a call running, may still get them (merge rule 3 keeps the first
        terminal status, rule 6 cancels the running calls: a guess stored is never undone)."""
        s = self._s
        if not s.inferred_turns or s.explicit_turns or not s.turn_active or s.turn_id is None:
            return False
        return not s.turn_replied or bool(s.running_calls.get(s.turn_id))

    def finish(self) -> list[Op]:
        s = self._s
        last = self._last_line
        if last is None:
            return []
        out: Ops = []
        if s.conversation_id is None:
            out = self._release(self._threadless_conversation(), None)
        session_file.close_inferred_turn(s, last, out, s.last_at)
        release_turnless_at_end(s, out)
        # The final activity time: lastSeenAt otherwise only moves on turn boundaries.
        conversation(s, last, out, s.last_at)
        return out

    def _threadless_conversation(self) -> str:
        s = self._s
        return s.fixed_conversation or f"source:{s.source}"

    def _release(
        self, conversation_id: str, thread: str | None, last_parsed: tuple[str, str, Any] | None = None
    ) -> Ops:
        """Process the held lines; `last_parsed` is the parse of the last one when it is the line just
        read (a session file's first line names its thread: each file would parse it twice)."""
        s = self._s
        s.start(conversation_id)
        if thread is not None:
            s.enter_thread(thread)
        held, s.pending, s.pending_bytes = s.pending, [], 0
        out: Ops = []
        last = len(held) - 1
        for i, line in enumerate(held):
            kind, method, obj = last_parsed if i == last and last_parsed is not None else parse(line)
            if i == 0:
                conversation(s, line, out, codex_time(kind, obj) or line.received_at, first=True)
            self._process(line, kind, method, obj, out)
        return out

    def _process(self, line: Line, kind: str, method: str, obj: Any, out: Ops) -> None:
        s = self._s
        derived: Ops = []
        codex_at = codex_time(kind, obj)
        s.last_at_is_codex = codex_at is not None
        s.prev_at = s.last_at
        at = s.last_at = codex_at or line.received_at
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
        # also have switched threads). After them when the line named an exec run: the run's turn op
        # must reach the store before anything filed in it.
        if kind in (BAD, UNKNOWN):
            self.bad_lines[method] = self.bad_lines.get(method, 0) + 1
        event = event_op(s.cur or cur, line, method, obj, s.line_turn, kind != BAD)
        if s.run_named:
            s.run_named = False
            out.extend(derived)
            out.append(event)
        else:
            out.append(event)
            out.extend(derived)

    def _process_v2(self, line: Line, method: str, obj: dict[str, Any], out: Ops) -> None:
        """`_process` for an app-server v2 line (most lines), with `codex_time`, `line_thread` and the
        dispatch of `app_server.handle` inline; the same steps in the same order."""
        s = self._s
        emitted = obj.get("emittedAtMs")
        if type(emitted) is int and _MS_THRESHOLD <= emitted <= _MAX_NUMBER:
            at = emitted  # what epoch_ms makes of a time already in ms
            s.last_at_is_codex = True
        else:
            codex_at = epoch_ms(emitted) if emitted is not None else None
            s.last_at_is_codex = codex_at is not None
            at = codex_at or line.received_at
        s.last_at = at
        cur = s.cur
        assert cur is not None
        params = obj.get("params")
        derived: Ops = []
        if type(params) is dict:
            thread = params.get("threadId")
            if thread is None and method == "thread/started":
                thread = _get(params, "thread", "id")
            if _usable_id(thread) and thread != cur.thread_id:
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
