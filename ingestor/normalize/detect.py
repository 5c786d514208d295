"""Which kind of stream a line belongs to, decided line by line (a tap may interleave kinds).

The kinds and the `method` recorded for each line's raw event:

| line shape | kind | method |
| --- | --- | --- |
| `{"method": "codex/event/<t>", "params": {"id", "msg", "conversationId"}}` | legacy | the method |
| `{"method": m, ...}` (v2 notification, or a request either way) | app-server | `m` |
| `{"id", "result"}` / `{"id", "error"}` (JSON-RPC responses) | rpc | `rpc/result` / `rpc/error` |
| `{"timestamp", "type", "payload"}` (session file `rollout-*.jsonl`) | session-file | `type` |
| `{"type": "ingestor.hello", ...}` | hello | `ingestor.hello` |
| `{"type": t, ...}` (`codex exec --json`) | exec-json | `t` |
| `{"id", "msg": {"type": t}}` (older output) | idmsg | `codex/event/<t>`, as the legacy events |
| any other JSON value | unknown | `ingestor/unknown` |
| not JSON, not UTF-8, too long, too dense | bad | `ingestor/invalidJson`, `oversize`, `unparsed` (raw.py) |
"""

from __future__ import annotations

from typing import Any, Final

from ingestor.normalize.state import EXEC, LEGACY, SESSION, V2

HELLO: Final = "ingestor.hello"
RPC: Final = "rpc"
IDMSG: Final = "idmsg"
UNKNOWN: Final = "unknown"
BAD: Final = "bad"

LEGACY_PREFIX: Final = "codex/event/"


def classify(obj: Any) -> tuple[str, str]:
    """(kind, method) of a parsed line. Never raises, whatever the value."""
    if type(obj) is not dict:
        return UNKNOWN, "ingestor/unknown"
    method = obj.get("method")
    if type(method) is str:
        return (LEGACY if method.startswith(LEGACY_PREFIX) else V2), method
    kind = obj.get("type")
    if type(kind) is str:
        if "payload" in obj and "timestamp" in obj:
            return SESSION, kind
        if kind == HELLO:
            return HELLO, kind
        return EXEC, kind
    if "id" in obj:
        msg = obj.get("msg")
        if type(msg) is dict:
            msg_type = msg.get("type")
            return IDMSG, LEGACY_PREFIX + (msg_type if type(msg_type) is str else "unknown")
        if "result" in obj:
            return RPC, "rpc/result"
        if "error" in obj:
            return RPC, "rpc/error"
    return UNKNOWN, "ingestor/unknown"
