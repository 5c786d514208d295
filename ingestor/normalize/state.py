"""Per-stream state the normalizer keeps between lines.

Everything here is derived from the lines fed so far, so replaying the same input rebuilds the same
state and therefore the same operations and keys.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from ingestor.lines import Line
from ingestor.ops import AppendRateLimit, AppendUsageSnapshot, Op

HeldForTurn = AppendUsageSnapshot | AppendRateLimit
"""The ops Codex tells without a turn, which wait for one (facts.hold_for_turn)."""

MAX_ID_CHARS: Final = 1024
"""The longest conversation or thread id taken from a stream (Codex's are 36-character UUIDs): every
op of a conversation repeats its id, so a longer one is refused (the line is kept raw)."""
MAX_THREADS: Final = 1024
"""Threads whose state a stream keeps (least recently entered forgotten first)."""
RETAINED_TURNS: Final = 8
"""Ended turns whose state a stream keeps."""

# Stream kinds: also the `source` of usage snapshots and the owner tag of command chunks.
V2 = "app-server"
LEGACY = "codex-event"
EXEC = "exec-json"
SESSION = "session-file"


@dataclass(slots=True)
class Command:
    """What is known about one command (a v2 item, a legacy call, an exec item)."""

    turn_id: str
    owner: str
    """The stream kind that first described the command: only it sets the argv/parsedCmd/source
    (v2 and legacy spell them differently, so letting both write would flip the row back and forth)."""
    chunked: bool = False
    """The `chunked` flag was sent (once per stream is enough: it is sticky in the store)."""
    chunk_copies: dict[tuple[str, bytes], int] = field(default_factory=dict)
    """How often each (stream, digest of the bytes) was chunked: the n-th identical chunk of a call is
    its own fact (facts.chunk). The store numbers chunks (`seq`), not the normalizer."""
    tool: str = "command"
    """What the call is (the `source` column: command | file | mcp | search): how a session file's
    tool output is read."""
    identity: str | None = None
    """The call's identity in its turn (`call` on its ops), once its argv is known."""
    held_description: Any = None
    """A session file's `parsedCmd` of a call, from its start, held for the op that ends the call
    (see session_file.py)."""


@dataclass(slots=True)
class Thread:
    """One Codex thread of the stream (an app-server serves several) and where it stands."""

    conversation_id: str
    thread_id: str | None = None
    announced: bool = False
    turn_id: str | None = None
    """The current (or, between turns, the last) turn."""
    turn_active: bool = False
    turn_replied: bool = False
    """The current turn produced an assistant message (how an inferred turn's outcome is judged)."""
    model: str | None = None
    service_tier: str | None = None
    forked_from: str | None = None
    """The thread this one is a fork of (session_meta.forked_from_id, v2 thread.forkedFromId)."""
    fork_base_pending: bool = False
    """The stream saw the fork begin and has not yet heard its usage: the first report tells the
    totals the fork inherited (usage_facts.fork_base)."""
    key_base: Any = None
    """The raw events' key hasher, primed with `key_scope` (see raw.event_op)."""
    key_scope: str | None = None


@dataclass(slots=True)
class State:
    source: str
    fixed_conversation: str | None = None
    """Set when the constructor or a hello line chose the conversation id: every thread files there."""
    cur: Thread | None = None
    """The thread of the line being normalized (None until the conversation id is known)."""
    threads: dict[str, Thread] = field(default_factory=dict)
    model_provider: str | None = None
    client_name: str | None = None

    turn_started_at: dict[str, int] = field(default_factory=dict)
    derived_turns: dict[str, int] = field(default_factory=dict)
    """Turns counted per thread id, for session files without turn ids."""
    exec_run_started_at: int | None = None
    """An exec run's `turn.started` time, until its next line names the run (exec_json._run_turn)."""
    run_named: bool = False
    """The line being normalized named an exec run (its raw event then follows the run's turn op)."""
    exec_first_usage: bool = False
    """An exec process began (`thread.started`) and has not reported usage yet (exec_json)."""

    commands: dict[str, Command] = field(default_factory=dict)
    turn_commands: dict[str, list[str]] = field(default_factory=dict)
    """The call ids of each turn's commands (forgotten with the turn)."""
    occurrences: dict[str, dict[tuple[str, ...], int]] = field(default_factory=dict)
    """Per turn, how often the same text (message, reasoning) was seen per (kind, role, hash)."""
    plan_progress: dict[str, dict[str, tuple[str, str, str]]] = field(default_factory=dict)
    """Per turn, per kind of stream, the plan it told last: (progress, content, identity) hashes
    (tools.plan_message)."""
    ended_turns: deque[str] = field(default_factory=deque)
    """Turns that ended, oldest first: only the last `RETAINED_TURNS` keep their state."""
    running_calls: dict[str, set[str]] = field(default_factory=dict)
    """Per turn, the calls last upserted as `running`: closed when their turn ends (facts.turn_ended)."""
    saw_legacy: bool = False
    """The stream carries legacy `codex/event/*` events (then anonymous v2 twins are redundant)."""
    reasoning_items: bool = False
    """Reasoning arrives as whole items in this stream (then per-section events are redundant)."""
    turnless: list[HeldForTurn] = field(default_factory=list)
    """Usage snapshots and rate limits told before this stream knew a turn: they get the first turn
    it learns of, or at the end the store gives them the thread's latest (facts.hold_for_turn)."""

    explicit_turns: bool = False
    """A turn start event was seen; else (Codex 0.63 session files) user messages delimit turns."""
    inferred_turns: bool = False
    """Turns are being inferred from user messages (see session_file.py)."""
    copied_from: str | None = None
    """A session file is inside lines copied from this other thread (a sub-agent spawned with its
    parent's history starts its file with the parent's): raw events only (session_file.handle)."""
    session_cwd: str | None = None
    """A session file's working directory (session_meta, turn_context): what patch paths are relative to."""
    last_at: int = 0
    """The time of the latest line (its event time when it has one)."""
    prev_at: int = 0
    """`last_at` of the line before (non-v2 lines): when a session that the latest line ends ended."""
    last_at_is_codex: bool = False
    """`last_at` is Codex's own time for the line (v2 `emittedAtMs`, a session file's `timestamp`),
    not when the line arrived."""
    line_turn: str | None = None
    """The turn of the line being normalized (its raw event's turnId)."""

    pending: list[Line] = field(default_factory=list)
    """Lines held until the thread is known."""
    pending_bytes: int = 0

    def start(self, conversation_id: str) -> None:
        self.cur = Thread(conversation_id=conversation_id)

    def enter_thread(self, thread_id: str) -> bool:
        """Make `thread_id` the current thread; True when it is new (its conversation needs announcing).
        Without a chosen conversation id, each thread is its own conversation."""
        cur = self.cur
        if cur is None or cur.thread_id == thread_id or len(thread_id) > MAX_ID_CHARS:
            return False
        if cur.thread_id is None:
            cur.thread_id = thread_id
            self.threads[thread_id] = cur
            return False
        known = self.threads.pop(thread_id, None)
        if known is not None:
            self.cur = self.threads[thread_id] = known  # now the most recently entered
            return False
        if len(self.threads) >= MAX_THREADS:
            # The least recently entered thread: a connection may carry threads for weeks. Met again,
            # it is announced again (a no-op for the store) and learns its turn from its lines.
            idle = next(iter(self.threads))
            del self.threads[idle]
            self.derived_turns.pop(idle, None)
        self.cur = self.threads[thread_id] = Thread(self.fixed_conversation or thread_id, thread_id)
        return True

    def forget_ended_turns(self, turn_id: str) -> None:
        """`turn_id` ended: keep the state of the last few ended turns (late copies of their events,
        such as 0.63's second copy of each, still find it) and forget older ones, so that a stream's
        memory does not grow with the turns it has carried. What is forgotten is only needed while
        a turn runs; the store holds the rest (chunk numbers, a thread's conversation)."""
        self.ended_turns.append(turn_id)
        while len(self.ended_turns) > RETAINED_TURNS:
            old = self.ended_turns.popleft()
            if old == self.turn_id or old in self.ended_turns:
                continue  # running again, or ended twice: still wanted
            self.turn_started_at.pop(old, None)
            self.occurrences.pop(old, None)
            self.plan_progress.pop(old, None)
            for call_id in self.turn_commands.pop(old, ()):
                self.commands.pop(call_id, None)

    # The current thread's fields, under the names the handlers use.

    @property
    def conversation_id(self) -> str | None:
        return None if self.cur is None else self.cur.conversation_id

    @property
    def thread_id(self) -> str | None:
        return None if self.cur is None else self.cur.thread_id

    @property
    def conversation_announced(self) -> bool:
        return self.cur is not None and self.cur.announced

    @conversation_announced.setter
    def conversation_announced(self, value: bool) -> None:
        if self.cur is not None:
            self.cur.announced = value

    @property
    def turn_id(self) -> str | None:
        return None if self.cur is None else self.cur.turn_id

    @turn_id.setter
    def turn_id(self, value: str | None) -> None:
        if self.cur is not None:
            self.cur.turn_id = value

    @property
    def turn_active(self) -> bool:
        return self.cur is not None and self.cur.turn_active

    @turn_active.setter
    def turn_active(self, value: bool) -> None:
        if self.cur is not None:
            self.cur.turn_active = value

    @property
    def model(self) -> str | None:
        return None if self.cur is None else self.cur.model

    @model.setter
    def model(self, value: str | None) -> None:
        if self.cur is not None:
            self.cur.model = value

    @property
    def service_tier(self) -> str | None:
        return None if self.cur is None else self.cur.service_tier

    @service_tier.setter
    def service_tier(self, value: str | None) -> None:
        if self.cur is not None:
            self.cur.service_tier = value

    @property
    def turn_replied(self) -> bool:
        return self.cur is not None and self.cur.turn_replied

    @turn_replied.setter
    def turn_replied(self, value: bool) -> None:
        if self.cur is not None:
            self.cur.turn_replied = value

    def occurrence(self, turn_id: str, *parts: str) -> int:
        counts = self.occurrences.get(turn_id)
        if counts is None:
            counts = self.occurrences[turn_id] = {}
        n = counts.get(parts, 0)
        counts[parts] = n + 1
        return n


Ops = list[Op]
