"""A small, complete conversation as operations: one turn, messages, a chunked command, usage."""

from __future__ import annotations

import base64
from typing import Any

from ingestor.ops import Op

T0 = 1_763_780_000_000


def op(name: str, key: str, **args: Any) -> Op:
    return {"op": name, "key": key, "args": args}  # type: ignore[typeddict-item]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def conversation_ops() -> list[Op]:
    return [
        op("upsertConversation", "c1", conversationId="conv-1", threadId="th-1", startedAt=T0, lastSeenAt=T0),
        op(
            "upsertTurn",
            "t1",
            turnId="turn-1",
            conversationId="conv-1",
            status="running",
            startedAt=T0 + 1,
            model="gpt-5",
        ),
        op(
            "appendEvent",
            "e1",
            conversationId="conv-1",
            turnId="turn-1",
            method="turn/started",
            payload={"params": {"n": 1}},
            receivedAt=T0 + 1,
        ),
        op("appendMessage", "m1", turnId="turn-1", role="user", content="list files", createdAt=T0 + 2),
        op(
            "appendReasoningSection",
            "r1",
            turnId="turn-1",
            itemId="rs_1",
            summaryText=["Plan", "Run ls"],
            rawContent={"summary": ["Plan"]},
            position=0,
            createdAt=T0 + 3,
        ),
        op(
            "upsertCommand",
            "x1",
            callId="call-1",
            turnId="turn-1",
            command=["ls", "-l"],
            cwd="/tmp",
            status="running",
            startedAt=T0 + 4,
            chunked=True,
        ),
        op(
            "appendCommandChunk",
            "k1",
            callId="call-1",
            stream="stdout",
            seq=0,
            chunkBase64=b64(b"a.txt\n"),
            createdAt=T0 + 5,
        ),
        op(
            "appendCommandChunk",
            "k2",
            callId="call-1",
            stream="stderr",
            seq=1,
            chunkBase64=b64(b"warn \xe2"),
            createdAt=T0 + 6,
        ),
        op(
            "appendCommandChunk",
            "k3",
            callId="call-1",
            stream="stdout",
            seq=2,
            chunkBase64=b64(b"b.txt\n"),
            createdAt=T0 + 7,
        ),
        op(
            "upsertCommand",
            "x2",
            callId="call-1",
            turnId="turn-1",
            status="completed",
            exitCode=0,
            durationMs=12.5,
            endedAt=T0 + 8,
            aggregatedOutput="a.txt\nb.txt\n",
            parsedCmdJson='{"$k":1}',
        ),
        op(
            "appendMessage",
            "m2",
            turnId="turn-1",
            role="assistant",
            content="Two files.",
            createdAt=T0 + 9,
            rawContentJson='{"n":123456789012345678901234567890}',
        ),
        op(
            "appendUsageSnapshot",
            "u1",
            turnId="turn-1",
            totalInputTokens=100,
            cachedInputTokens=20,
            outputTokens=5,
            totalTokens=105,
            modelContextWindow=272000,
            source="codex",
            capturedAt=T0 + 10,
        ),
        op(
            "appendRateLimit",
            "l1",
            turnId="turn-1",
            scope="primary",
            usedPercent=12.5,
            windowMinutes=300,
            resetsAt=T0 + 3_600_000,
            capturedAt=T0 + 10,
        ),
        op(
            "appendRateLimit",
            "l2",
            turnId="turn-1",
            scope="credits",
            hasCredits=True,
            unlimited=False,
            balance="10",
            capturedAt=T0 + 10,
        ),
        op(
            "upsertTurn",
            "t2",
            turnId="turn-1",
            conversationId="conv-1",
            status="succeeded",
            endedAt=T0 + 11,
            startedAt=T0 + 1,
        ),
        op("upsertConversation", "c2", conversationId="conv-1", lastSeenAt=T0 + 11),
    ]
