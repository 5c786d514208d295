"""Builders for the derived operations, shared by every stream kind.

The keys are computed here and only here, from the facts themselves (turn, role, text, totals...),
never from which stream told them: that is what lets the v2 and the legacy copy of the same fact
(sent side by side by app-server up to early 2026) land on the same row.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any, Final, cast

import orjson

from ingestor.lines import Line
from ingestor.normalize.state import MAX_ID_CHARS, Command, HeldForTurn, Ops, State
from ingestor.ops import (
    AppendMessageArgs,
    AppendReasoningSectionArgs,
    CommandColumns,
    ForkedFromUsage,
    Op,
    UpsertCommandArgs,
    UpsertConversationArgs,
    UpsertTurnArgs,
    make_key,
)

CHUNK_MAX: Final = 64 * 1024
COMMAND_SOURCE: Final = "command"
"""`commands.source` is the spec's kind of tool call (command | file | mcp | search). Every row the
normalizer makes is a shell command; Codex's own origin of it (agent, userShell, ...) stays in the raw
event."""
_MS_THRESHOLD: Final = 100_000_000_000
"""Epoch values below this are seconds (year 5138 in seconds, 1973 in milliseconds)."""


_MAX_NUMBER: Final = 2**53
"""Number columns hold float64: larger integers would not be exact (and Convex refuses them)."""


def number(value: Any) -> int | float | None:
    """A value for a number column: an int or finite float within ±2^53, else None (unknown)."""
    if type(value) is int:
        return value if -_MAX_NUMBER <= value <= _MAX_NUMBER else None
    if type(value) is float:
        return value if -_MAX_NUMBER <= value <= _MAX_NUMBER else None  # also false for NaN
    return None


def integer(value: Any) -> int | None:
    return value if type(value) is int and -_MAX_NUMBER <= value <= _MAX_NUMBER else None


def epoch_ms(value: Any) -> int | None:
    """Codex sends some times in seconds (turn.startedAt, resetsAt) and some in ms: normalize to ms."""
    n = number(value)
    if n is None or n < 0:
        return None
    ms = int(n * 1000) if n < _MS_THRESHOLD else int(n)
    return ms if ms <= _MAX_NUMBER else None


def iso_ms(value: Any) -> int | None:
    """Epoch ms of an ISO-8601 timestamp (session files), None when it isn't one. A time without a zone
    is taken as UTC, as Codex writes them: never the local zone, which would make the result depend on
    the machine."""
    if type(value) is not str:
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ms = int(moment.timestamp() * 1000)
        return ms if 0 <= ms <= _MAX_NUMBER else None
    except (ValueError, OverflowError, OSError):
        return None


def turn_key(s: State, codex_turn_id: str) -> str:
    """The stored turn id for a Codex turn id. Codex before 2026 numbered turns by submission
    ("0", "1", ... in every thread), so such ids are scoped by thread to stay unique; newer ids are
    UUIDs and are kept as they are."""
    if codex_turn_id.isdigit():
        return f"{s.thread_id or s.conversation_id}/{codex_turn_id}"
    return codex_turn_id


def lookup(table: dict[str, str], value: Any) -> str | None:
    """`table[value]` for a string value (a stray list or dict in the stream must not raise)."""
    return table.get(value) if type(value) is str else None


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


# --- conversations -------------------------------------------------------------------------------


def conversation(
    s: State,
    line: Line,
    out: Ops,
    at: int,
    *,
    first: bool = False,
    started_at: int | None = None,
    fork_usage: ForkedFromUsage | None = None,
) -> None:
    """Announce the conversation (first time: with startedAt) or move its lastSeenAt. `started_at`:
    when the stream says when the conversation began; `fork_usage`: see `usage_facts.fork_base`."""
    cid = s.conversation_id
    if cid is None:
        return
    args: UpsertConversationArgs = {"conversationId": cid, "lastSeenAt": at}
    if started_at is not None:
        args["startedAt"] = started_at
        s.conversation_announced = True
    elif first or not s.conversation_announced:
        args["startedAt"] = at
        s.conversation_announced = True
    if s.thread_id is not None:
        args["threadId"] = s.thread_id
    if s.model_provider is not None:
        args["modelProvider"] = s.model_provider
    if s.client_name is not None:
        args["clientName"] = s.client_name
    if s.cur is not None and s.cur.forked_from is not None:
        args["forkedFromThreadId"] = s.cur.forked_from
    if fork_usage is not None:
        args["forkedFromUsage"] = fork_usage
    op: Op = {"op": "upsertConversation", "key": make_key("c", cid, line.ordinal, at), "args": args}
    file_under_thread(s, op)
    if s.model is not None and "thread" in op:
        op["model"] = s.model
    out.append(op)


def forked(s: State, parent: Any) -> bool:
    """The current thread begins here as a fork of `parent` (a usable thread id): linked to it on its
    conversation, and waiting for the usage it inherited (`usage_facts.fork_base`). True when it is
    news."""
    cur = s.cur
    usable = type(parent) is str and 0 < len(parent) <= MAX_ID_CHARS
    if cur is None or not usable or parent in (cur.thread_id, cur.forked_from):
        return False
    cur.forked_from = parent
    cur.fork_base_pending = True
    return True


def file_under_thread(s: State, op: Op) -> None:
    """Name the op's thread: the store files each thread under one conversation (the first it saw)
    and resolves the op's `conversationId` by it, whatever this stream proposed."""
    thread = s.thread_id
    if thread is not None:
        op["thread"] = thread


def thread_scope(s: State) -> str:
    """What the keys of thread-wide facts (usage totals, rate-limit windows) are scoped by: the Codex
    thread, never the stream or the conversation a producer chose, so every channel that reports the
    thread lands on the same keys."""
    return s.thread_id or s.conversation_id or s.source


# --- turns ---------------------------------------------------------------------------------------


def _turn_op(s: State, line: Line, out: Ops, turn_id: str, args: UpsertTurnArgs) -> None:
    args["conversationId"] = s.conversation_id
    op: Op = {
        "op": "upsertTurn",
        "key": make_key("t", turn_id, line.ordinal, args.get("status")),
        "args": args,
    }
    file_under_thread(s, op)
    out.append(op)


def turn_started(s: State, line: Line, out: Ops, turn_id: str, at: int) -> None:
    if s.turn_id == turn_id and s.turn_active:
        return  # the other stream's copy of a start we already recorded
    s.turn_id = turn_id
    s.turn_active = True
    s.turn_replied = False
    s.line_turn = turn_id
    started = s.turn_started_at.setdefault(turn_id, at)
    args: UpsertTurnArgs = {"turnId": turn_id, "status": "running", "startedAt": started}
    if s.model is not None:
        args["model"] = s.model
    if s.service_tier is not None:
        args["serviceTier"] = s.service_tier
    _turn_op(s, line, out, turn_id, args)
    conversation(s, line, out, at)
    _release_turnless(s, out, turn_id)


def hold_for_turn(s: State, out: Ops, turn_id: str | None, op: HeldForTurn) -> None:
    """Emit a usage snapshot or rate limit in `turn_id`, else the current (or last) turn. Codex tells
    both without a turn id, sometimes before the first turn; a stream that began in the middle of a
    thread knows no turn until a line names one. Until then they wait for the first turn the stream
    learns of (the next one, or the one it is in); left waiting at the end, they go without a turn
    and the store files them in the thread's latest turn (docs/operations.md)."""
    turn = turn_id if turn_id is not None else s.turn_id
    if turn is None:
        s.turnless.append(op)
        if len(s.turnless) > MAX_TURNLESS:
            release_turnless_at_end(s, out)  # a stream that never names a turn holds nothing for long
        return
    op["args"]["turnId"] = turn
    out.append(op)


MAX_TURNLESS: Final = 64
"""Usage snapshots and rate limits held for a turn, at most (beyond, they go without one)."""


def _release_turnless(s: State, out: Ops, turn_id: str) -> None:
    if s.turnless:
        held, s.turnless = s.turnless, []
        for op in held:
            op["args"]["turnId"] = turn_id
            out.append(op)


def release_turnless_at_end(s: State, out: Ops) -> None:
    out.extend(s.turnless)
    s.turnless = []


def turn_seen(s: State, line: Line, out: Ops, turn_id: str, at: int) -> None:
    """An event names a turn: make sure the row exists (a tap may attach mid-turn)."""
    s.line_turn = turn_id
    if turn_id in s.turn_started_at:
        return
    s.turn_started_at[turn_id] = at
    s.turn_id = turn_id
    s.turn_active = True
    _turn_op(s, line, out, turn_id, {"turnId": turn_id, "startedAt": at})
    _release_turnless(s, out, turn_id)


def turn_ended(s: State, line: Line, out: Ops, turn_id: str, status: str, at: int, error: str | None) -> None:
    turn_seen(s, line, out, turn_id, at)
    if s.turn_id == turn_id:
        s.turn_active = False
    args: UpsertTurnArgs = {"turnId": turn_id, "status": status, "endedAt": at}
    if error is not None:
        args["error"] = error
    _turn_op(s, line, out, turn_id, args)
    s.running_calls.pop(turn_id, None)  # the store closes them (docs/operations.md, merge rule 6)
    conversation(s, line, out, at)
    s.forget_ended_turns(turn_id)


def turn_details(s: State, line: Line, out: Ops, turn_id: str, model: Any, service_tier: Any) -> None:
    args: UpsertTurnArgs = {"turnId": turn_id}
    if type(model) is str:
        args["model"] = model
    if type(service_tier) is str:
        args["serviceTier"] = service_tier
    if len(args) > 1:
        _turn_op(s, line, out, turn_id, args)


# --- commands ------------------------------------------------------------------------------------


def command_state(s: State, call_id: str, turn_id: str, kind: str) -> Command:
    cmd = s.commands.get(call_id)
    if cmd is None:
        cmd = s.commands[call_id] = Command(turn_id=turn_id, owner=kind)
        s.turn_commands.setdefault(turn_id, []).append(call_id)
    return cmd


def command(
    s: State, line: Line, out: Ops, kind: str, call_id: str, turn_id: str, fields: CommandColumns
) -> None:
    """Upsert a command. `fields` holds the columns this event knows (None = unknown)."""
    cmd = command_state(s, call_id, turn_id, kind)
    args: UpsertCommandArgs = {"callId": call_id, "turnId": cmd.turn_id}
    columns = cast("dict[str, Any]", args)  # `fields`' names are CommandColumns' (checked where written)
    owner = cmd.owner == kind
    _track_running(s, cmd, call_id, fields)
    for name, value in fields.items():
        if value is None:
            continue
        if not owner and name in ("command", "parsedCmd", "source"):
            continue
        columns[name] = value
    op: Op = {"op": "upsertCommand", "key": make_key("x", call_id, line.ordinal, kind), "args": args}
    argv = args.get("command")
    if cmd.identity is None and argv:
        # What the call is, whichever channel tells it: its argv and how many calls of the turn had
        # the same argv before it (exec and its session file name the same call differently).
        same = s.occurrence(cmd.turn_id, "call", text_hash(orjson.dumps(argv).decode()))
        cmd.identity = make_key("cc", argv, same)
    if cmd.identity is not None:
        op["call"] = cmd.identity
    file_under_thread(s, op)
    out.append(op)


_CALL_TERMINAL: Final = frozenset({"completed", "failed", "declined", "canceled"})


def _track_running(s: State, cmd: Command, call_id: str, fields: CommandColumns) -> None:
    """Remember what the call is and whether it still runs (a session file's output line is read
    only for a running call)."""
    source = fields.get("source")
    if type(source) is str and cmd.tool == COMMAND_SOURCE:
        cmd.tool = source
    status = fields.get("status")
    if status == "running":
        s.running_calls.setdefault(cmd.turn_id, set()).add(call_id)
    elif status in _CALL_TERMINAL:
        running = s.running_calls.get(cmd.turn_id)
        if running is not None:
            running.discard(call_id)


def is_running(s: State, call_id: str) -> bool:
    cmd = s.commands.get(call_id)
    return cmd is not None and call_id in s.running_calls.get(cmd.turn_id, ())


def chunk(
    s: State,
    line: Line,
    out: Ops,
    kind: str,
    call_id: str,
    turn_id: str,
    stream: str,
    data: bytes,
    encoding: str,
    at: int,
) -> None:
    """Append streamed output, in pieces of at most `CHUNK_MAX` bytes.

    A chunk's identity is its call, stream and bytes, and how many identical pieces the call had
    before it in this stream: a replay gives the same keys, and a second process that continues the
    call (a restart, a reconnect) adds its chunks after the stored ones. Its `seq` is not sent: the
    store numbers a call's chunks in the order they arrive, in the transaction that stores them. Which
    channel's chunks a call keeps (app-server 0.63 streamed each delta twice, as v2 text and as
    legacy bytes) is the store's decision too: the encoding of the call's first chunk."""
    if not data:
        return
    cmd = command_state(s, call_id, turn_id, kind)
    if not cmd.chunked:
        cmd.chunked = True
        out.append(
            {
                "op": "upsertCommand",
                "key": make_key("x", call_id, line.ordinal, "chunked"),
                "args": {"callId": call_id, "turnId": cmd.turn_id, "chunked": True},
            }
        )
    copies = cmd.chunk_copies
    for start in range(0, len(data), CHUNK_MAX):
        piece = data[start : start + CHUNK_MAX]
        identity = (stream, hashlib.blake2b(piece, digest_size=16).digest())
        copy = copies.get(identity, 0)
        copies[identity] = copy + 1
        out.append(
            {
                "op": "appendCommandChunk",
                "key": make_key("k", call_id, stream, identity[1].hex(), copy),
                "args": {
                    "callId": call_id,
                    "stream": stream,
                    "chunkBase64": base64.b64encode(piece).decode(),
                    "encoding": encoding,
                    "createdAt": at,
                },
            }
        )


# --- messages and reasoning ----------------------------------------------------------------------


def message(
    s: State, line: Line, out: Ops, family: str, turn_id: str, role: str, content: str, raw: Any, at: int
) -> None:
    """One completed message. `family` names the kind of event that told it (v2 item, legacy
    agent_message, legacy item_completed...): repeats of the same text in a turn are counted per family,
    so the n-th copy from each family gets the same key and the row is stored once, while a text the
    model really said twice is stored twice."""
    h = text_hash(content)
    n = s.occurrence(turn_id, family, role, h)
    args: AppendMessageArgs = {
        "turnId": turn_id,
        "role": role,
        "content": content,
        "rawContent": raw,
        "createdAt": at,
    }
    # The key is the message's identity within its turn: the store scopes it by the turn it files
    # the message in (docs/operations.md), which for an exec run is not known here.
    op: Op = {"op": "appendMessage", "key": make_key("m", role, h, n), "args": args}
    file_under_thread(s, op)
    out.append(op)


def reasoning(
    s: State,
    line: Line,
    out: Ops,
    family: str,
    turn_id: str,
    item_id: str | None,
    summary: list[str],
    raw: Any,
    at: int,
) -> None:
    """One reasoning item, keyed like `message` (on its summary text, whitespace aside: exec joins a
    summary's parts with one line break, other channels keep them apart); `position` is its index
    among the family's reasoning items of the turn."""
    h = text_hash(" ".join(" ".join(summary).split()))
    n = s.occurrence(turn_id, family, "reasoning", h)
    position = s.occurrence(turn_id, family, "reasoning#")
    args: AppendReasoningSectionArgs = {
        "turnId": turn_id,
        "itemId": item_id if item_id is not None else f"{turn_id}/reasoning/{position}",
        "summaryText": summary,
        "rawContent": raw,
        "position": position,
        "createdAt": at,
    }
    op: Op = {"op": "appendReasoningSection", "key": make_key("r", h, n), "args": args}
    file_under_thread(s, op)
    out.append(op)


def next_derived_turn(s: State) -> str:
    """A turn id for session files that give none (Codex 0.63): the thread id and the turn's ordinal
    in the file."""
    thread = s.thread_id or s.conversation_id or ""
    n = s.derived_turns.get(thread, 0) + 1
    s.derived_turns[thread] = n
    return f"{thread}/turn-{n}"
