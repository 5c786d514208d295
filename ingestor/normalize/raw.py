"""Raw events (`events_raw`): one per input line, whatever the line holds.

Lines that are not JSON are kept too, losslessly where possible:

- not valid UTF-8: method `ingestor/invalidJson`, payload `{"base64": <the exact bytes>}`;
- UTF-8 but not JSON (or JSON orjson refuses, e.g. integers beyond 64 bits): method
  `ingestor/invalidJson`, payload `{"text": <the line>}`;
- longer than the source's limit: method `ingestor/oversize`, payload
  `{"bytes": <full length>, "headBase64": <the first bytes, at most 64 KiB>}` (the rest never reached us);
- so dense in values that its parsed form would take too much memory (parse_cost.py): method
  `ingestor/unparsed`, payload `{"text": <the line>}` (or `{"base64"}`), never parsed.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Final, cast

import orjson

from ingestor.lines import Line
from ingestor.normalize.detect import BAD, classify
from ingestor.normalize.parse_cost import too_costly_to_parse
from ingestor.normalize.state import Thread
from ingestor.ops import AppendEvent, AppendEventArgs, EventArgs, Op

OVERSIZE_HEAD: Final = 64 * 1024


def parse(line: Line) -> tuple[str, str, Any]:
    """(kind, method, payload) of a line; bad lines get kind `bad` and a lossless stand-in payload."""
    data = line.data
    if line.oversize is not None:
        head = base64.b64encode(data[:OVERSIZE_HEAD]).decode()
        return BAD, "ingestor/oversize", {"bytes": line.oversize, "headBase64": head}
    if too_costly_to_parse(data):
        return BAD, "ingestor/unparsed", _text(data)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return BAD, "ingestor/invalidJson", _text(data)
    kind, method = classify(obj)
    return kind, method, obj


def _text(data: bytes) -> dict[str, str]:
    """A stand-in payload holding the line exactly: its text, or its base64 when not UTF-8."""
    try:
        return {"text": data.decode()}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def key_base(scope: str) -> hashlib.blake2b:
    """A BLAKE2b state fed with the key scope: copying it per line is cheaper than rehashing."""
    return hashlib.blake2b(f"{len(scope)}:{scope}:".encode(), digest_size=16)


def event_op(thread: Thread, line: Line, method: str, payload: Any, turn_id: str | None, parsed: bool) -> Op:
    """The raw event of a line; `parsed` is False when `payload` stands in for a bad line.

    Its identity is the line's own bytes in its Codex thread (the conversation, before any thread is
    known): not its position in the stream, which a hello line, a restart, a reconnect or a second
    channel would shift. A line byte for byte the same as one the thread already has is that line
    again (a replay, an overlap of two captures), so it is stored once; its facts are derived all the
    same (every `turn.started` of an exec stream starts a turn).

    A parsed line's payload is the line's whole value, and the op keeps the line's own JSON text
    beside it (`EventArgs.line_json`): sinks store or send that exact text rather than encoding the
    value again. Whether Convex can hold the value is the Convex encoding's question
    (`ingestor.sinks.wire`), not normalization's."""
    scope = thread.thread_id or thread.conversation_id
    base = thread.key_base
    if base is None or thread.key_scope != scope:
        base = thread.key_base = key_base(scope)
        thread.key_scope = scope
    data = line.data
    oversize = line.oversize
    h = base.copy()
    h.update(b"-:" if oversize is None else b"%d:" % oversize)
    h.update(data)
    if turn_id is None:
        args = EventArgs(
            conversationId=thread.conversation_id, method=method, payload=payload, receivedAt=line.received_at
        )
    else:
        args = EventArgs(
            conversationId=thread.conversation_id,
            method=method,
            payload=payload,
            receivedAt=line.received_at,
            turnId=turn_id,
        )
    args.line_json = (payload, data) if parsed else None
    # Its columns (checked by EventArgs' signature), and the line's own text beside them.
    columns = cast("AppendEventArgs", args)
    op: AppendEvent = {"op": "appendEvent", "key": "e:" + h.hexdigest(), "args": columns}
    if thread.thread_id is not None:
        op["thread"] = thread.thread_id
        if turn_id is None and thread.turn_id is None:
            op["unknown_turn"] = True
    return op
