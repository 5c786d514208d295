"""Generate large, realistic Codex app-server streams, deterministically from a seed.

A handful of conversations run interleaved. Each goes turn after turn: user message, reasoning with
summary deltas, commands with output deltas, an agent message with token deltas, token usage after
each model call, rate-limit notifications, turn and thread status. Some conversations behave like
Codex 0.63 and also emit every core event again as a legacy `codex/event/*` notification (and each
`token_count` twice). Shapes come from the recorded fixtures when they exist (see `templates.py`).

    python -m bench.gen --profile codex --events 100000 --seed 1 --out FILE
"""

from __future__ import annotations

import argparse
import base64
import math
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bench.profiles import PROFILES, Profile
from bench.templates import Templates
from bench.text import TextPool

Event = dict[str, Any]

BASE_MS = 1_763_780_000_000


class Ctx:
    """State shared by the conversations of one stream."""

    def __init__(self, profile: Profile, seed: int, templates: Templates) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.text = TextPool(random.Random(seed ^ 0x5EED))
        self.tpl = templates
        self.now_ms = BASE_MS
        self.request_id = 0
        self.rate_used = 3.0

    def uid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-7{h[13:16]}-8{h[17:20]}-{h[20:32]}"

    def tick(self) -> int:
        self.now_ms += self.rng.randrange(1, 40)
        return self.now_ms

    def next_request(self) -> int:
        self.request_id += 1
        return self.request_id

    def output_size(self) -> int:
        p = self.profile
        if p.output_delta_sigma == 0:
            return p.output_delta_median
        size = int(math.exp(self.rng.gauss(math.log(p.output_delta_median), p.output_delta_sigma)))
        return max(16, min(p.output_delta_max, size))


class Conversation:
    """One thread: yields its lines forever, turn after turn."""

    def __init__(self, ctx: Ctx, legacy: bool) -> None:
        self.ctx = ctx
        self.legacy = legacy
        self.flavor = "legacy" if legacy else "v2"
        self.thread_id = ctx.uid()
        self.cwd = f"/home/dev/project-{self.thread_id[:4]}"
        self.total_tokens = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.submission = 0

    # -- line builders ----------------------------------------------------------------------------

    def note(self, method: str, params: dict[str, Any], sub: str = "") -> Event:
        ctx = self.ctx
        params = ctx.tpl.params(self.flavor, method, sub, params)
        ev: Event = {"method": method, "params": params}
        if not self.legacy:
            ev["emittedAtMs"] = ctx.tick()
        else:
            ctx.tick()
        return ev

    def legacy_ev(self, msg_type: str, msg: dict[str, Any]) -> Event:
        msg = self.ctx.tpl.legacy_msg(msg_type, {"type": msg_type, **msg})
        return {
            "method": f"codex/event/{msg_type}",
            "params": {"id": str(self.submission), "msg": msg, "conversationId": self.thread_id},
        }

    def ids(self, turn_id: str) -> dict[str, Any]:
        """Codex 0.63 sent v2 notifications without thread or turn id; 0.169 sends both."""
        return {} if self.legacy else {"threadId": self.thread_id, "turnId": turn_id}

    def item(self, kind: str, turn_id: str, item: dict[str, Any], ts_key: str) -> Iterator[Event]:
        if self.legacy and item["type"] != "commandExecution":
            legacy_item = {**item, "type": item["type"][0].upper() + item["type"][1:]}
            yield self.legacy_ev(
                kind.replace("/", "_"), {"thread_id": self.thread_id, "turn_id": turn_id, "item": legacy_item}
            )
        item = self.ctx.tpl.item(self.flavor, item["type"], item)
        params = {**self.ids(turn_id), "item": item}
        if not self.legacy:
            params[ts_key] = self.ctx.now_ms
        yield self.note(kind, params, item["type"])

    # -- the session -------------------------------------------------------------------------------

    def run(self) -> Iterator[Event]:
        ctx = self.ctx
        thread = {
            "id": self.thread_id,
            "sessionId": self.thread_id,
            "cwd": self.cwd,
            "modelProvider": "openai",
            "cliVersion": "0.63.0" if self.legacy else "0.169.0",
            "createdAt": ctx.now_ms // 1000,
            "preview": "",
        }
        yield {"id": ctx.next_request(), "result": {"thread": thread, "model": "gpt-5.1-codex"}}
        yield self.note("thread/started", {"thread": thread})
        while True:
            yield from self.turn()

    def turn(self) -> Iterator[Event]:
        ctx, rng, p = self.ctx, self.ctx.rng, self.ctx.profile
        turn_id = str(self.submission) if self.legacy else ctx.uid()
        started = ctx.now_ms // 1000
        turn: dict[str, Any] = {"id": turn_id, "items": [], "status": "inProgress"}
        if not self.legacy:
            turn.update(rootTurnId=turn_id, error=None, startedAt=started, completedAt=None, durationMs=None)
        thread_ids = {} if self.legacy else {"threadId": self.thread_id}
        yield {"id": ctx.next_request(), "result": {"turn": turn}}
        if not self.legacy:
            yield self.note(
                "thread/status/changed", {"threadId": self.thread_id, "status": {"type": "active"}}
            )
        yield self.note("turn/started", {**thread_ids, "turn": turn})
        if self.legacy:
            yield self.legacy_ev("task_started", {"model_context_window": None})
        prompt = ctx.text.words(rng, rng.randrange(8, 60))
        user = {"type": "userMessage", "id": ctx.uid(), "content": [{"type": "text", "text": prompt}]}
        yield from self.item("item/started", turn_id, user, "startedAtMs")
        yield from self.item("item/completed", turn_id, user, "completedAtMs")
        if self.legacy:
            yield self.legacy_ev("user_message", {"message": prompt, "images": []})
        for _ in range(rng.randint(*p.commands_per_turn)):
            yield from self.reasoning(turn_id)
            yield from self.usage(turn_id)
            yield from self.command(turn_id)
        yield from self.agent_message(turn_id)
        yield from self.usage(turn_id)
        if self.legacy:
            yield self.legacy_ev("task_complete", {"last_agent_message": None})
        done = {**turn, "status": "completed"}
        if not self.legacy:
            done.update(completedAt=ctx.now_ms // 1000, durationMs=ctx.now_ms - started * 1000)
        yield self.note("turn/completed", {**thread_ids, "turn": done})
        if not self.legacy:
            yield self.note("thread/status/changed", {"threadId": self.thread_id, "status": {"type": "idle"}})
        self.submission += 1

    def deltas(
        self,
        turn_id: str,
        item_id: str,
        method: str,
        texts: list[str],
        legacy: tuple[str, ...],
        extra: dict[str, Any] | None = None,
    ) -> Iterator[Event]:
        """One v2 delta per text, each beside its legacy duplicates (Codex 0.63) when legacy."""
        for delta in texts:
            for kind in legacy if self.legacy else ():
                if kind.endswith("_content_delta"):
                    yield self.legacy_ev(
                        kind,
                        {
                            "thread_id": self.thread_id,
                            "turn_id": turn_id,
                            "item_id": item_id,
                            "delta": delta,
                            **(extra or {}),
                        },
                    )
                elif kind == "exec_command_output_delta":
                    chunk = base64.b64encode(delta.encode()).decode()
                    yield self.legacy_ev(kind, {"call_id": item_id, "stream": "stdout", "chunk": chunk})
                else:
                    yield self.legacy_ev(kind, {"delta": delta})
            yield self.note(method, {**self.ids(turn_id), "itemId": item_id, "delta": delta, **(extra or {})})

    def reasoning(self, turn_id: str) -> Iterator[Event]:
        ctx, rng = self.ctx, self.ctx.rng
        item_id = f"rs_{ctx.uid().replace('-', '')}"
        item: dict[str, Any] = {"type": "reasoning", "id": item_id, "summary": [], "content": []}
        yield from self.item("item/started", turn_id, item, "startedAtMs")
        if self.legacy:
            yield self.legacy_ev("agent_reasoning_section_break", {"item_id": item_id, "summary_index": 0})
        yield self.note(
            "item/reasoning/summaryPartAdded", {**self.ids(turn_id), "itemId": item_id, "summaryIndex": 0}
        )
        parts = [
            ctx.text.words(rng, rng.randrange(1, 5)) + " "
            for _ in range(rng.randint(*ctx.profile.reasoning_deltas))
        ]
        yield from self.deltas(
            turn_id,
            item_id,
            "item/reasoning/summaryTextDelta",
            parts,
            ("reasoning_content_delta", "agent_reasoning_delta"),
            {"summaryIndex": 0},
        )
        text = "".join(parts)
        yield from self.item("item/completed", turn_id, {**item, "summary": [text]}, "completedAtMs")
        if self.legacy:
            yield self.legacy_ev("agent_reasoning", {"text": text})

    def command(self, turn_id: str) -> Iterator[Event]:
        ctx, rng, p = self.ctx, self.ctx.rng, self.ctx.profile
        call_id = f"call_{ctx.uid().replace('-', '')[:24]}"
        script = rng.choice(("ls -la", "pytest -q", "cargo build", "git diff", "rg -n TODO", "cat README.md"))
        argv = ["/bin/bash", "-lc", script]
        parsed = [{"type": "unknown", "cmd": script}]
        item: dict[str, Any] = {
            "type": "commandExecution",
            "id": call_id,
            "command": f'/bin/bash -lc "{script}"',
            "cwd": self.cwd,
            "processId": str(rng.randrange(1000, 60000)),
            "source": "agent",
            "status": "inProgress",
            "commandActions": [{"type": "unknown", "command": script}],
            "aggregatedOutput": None,
            "exitCode": None,
            "durationMs": None,
        }
        begin = {
            "call_id": call_id,
            "turn_id": turn_id,
            "command": argv,
            "cwd": self.cwd,
            "parsed_cmd": parsed,
            "source": "agent",
        }
        if self.legacy:
            yield self.legacy_ev("exec_command_begin", begin)
        yield from self.item("item/started", turn_id, item, "startedAtMs")
        started = ctx.now_ms
        n = rng.randint(20, 60) if rng.random() < p.long_command_prob else rng.randint(0, p.output_deltas_max)
        out = [ctx.text.take(rng, ctx.output_size()) for _ in range(n)]
        yield from self.deltas(
            turn_id, call_id, "item/commandExecution/outputDelta", out, ("exec_command_output_delta",)
        )
        aggregated = "".join(out)[-p.aggregated_cap :]
        code = 0 if rng.random() < 0.85 else 1
        duration = ctx.now_ms - started + rng.randrange(5, 400)
        status = "completed" if code == 0 else "failed"
        if self.legacy:
            yield self.legacy_ev(
                "exec_command_end",
                {
                    **begin,
                    "stdout": aggregated,
                    "stderr": "",
                    "aggregated_output": aggregated,
                    "exit_code": code,
                    "duration": {"secs": duration // 1000, "nanos": duration % 1000 * 1_000_000},
                    "formatted_output": aggregated,
                },
            )
        done = {
            **item,
            "status": status,
            "aggregatedOutput": aggregated,
            "exitCode": code,
            "durationMs": duration,
        }
        yield from self.item("item/completed", turn_id, done, "completedAtMs")

    def agent_message(self, turn_id: str) -> Iterator[Event]:
        ctx, rng = self.ctx, self.ctx.rng
        item_id = f"msg_{ctx.uid().replace('-', '')}"
        item: dict[str, Any] = {"type": "agentMessage", "id": item_id, "text": ""}
        yield from self.item("item/started", turn_id, item, "startedAtMs")
        parts = [
            ctx.text.words(rng, rng.randrange(1, 4)) + " "
            for _ in range(rng.randint(*ctx.profile.agent_deltas))
        ]
        yield from self.deltas(
            turn_id,
            item_id,
            "item/agentMessage/delta",
            parts,
            ("agent_message_content_delta", "agent_message_delta"),
        )
        text = "".join(parts)
        yield from self.item("item/completed", turn_id, {**item, "text": text}, "completedAtMs")
        if self.legacy:
            yield self.legacy_ev("agent_message", {"message": text})

    def usage(self, turn_id: str) -> Iterator[Event]:
        """After each model call: v2 token usage + rate limits (0.169); two token_count each
        followed by rate limits (0.63, which had no v2 token usage notification)."""
        rng = self.ctx.rng
        inp, out = rng.randrange(2_000, 40_000), rng.randrange(20, 2_000)
        cached = inp * rng.randrange(0, 90) // 100
        reasoning = out // 3
        self.input_tokens += inp
        self.output_tokens += out
        self.total_tokens += inp + out
        last = {
            "totalTokens": inp + out,
            "inputTokens": inp,
            "cachedInputTokens": cached,
            "cacheWriteInputTokens": 0,
            "outputTokens": out,
            "reasoningOutputTokens": reasoning,
        }
        total = {
            "totalTokens": self.total_tokens,
            "inputTokens": self.input_tokens,
            "cachedInputTokens": cached,
            "cacheWriteInputTokens": 0,
            "outputTokens": self.output_tokens,
            "reasoningOutputTokens": reasoning,
        }
        if self.legacy:
            info = {
                "total_token_usage": _snake(total),
                "last_token_usage": _snake(last),
                "model_context_window": 272000,
            }
            ev = self.legacy_ev("token_count", {"info": info, "rate_limits": self._legacy_limits()})
            for _ in range(2):  # 0.63.0 emitted each token_count twice
                yield ev
                yield self.rate_limits()
            return
        usage = {"total": total, "last": last, "modelContextWindow": 272000}
        yield self.note("thread/tokenUsage/updated", {**self.ids(turn_id), "tokenUsage": usage})
        yield self.rate_limits()

    def _legacy_limits(self) -> dict[str, Any]:
        used = round(self.ctx.rate_used, 1)
        reset = self.ctx.now_ms // 1000 + 3600
        return {
            "primary": {"used_percent": used, "window_minutes": 300, "resets_at": reset},
            "secondary": {"used_percent": used / 4, "window_minutes": 10080, "resets_at": reset + 86400},
            "credits": None,
        }

    def rate_limits(self) -> Event:
        ctx = self.ctx
        ctx.rate_used = min(100.0, ctx.rate_used + ctx.rng.random() / 10)
        reset = ctx.now_ms // 1000 + 3600
        limits = {
            "limitId": "codex",
            "primary": {"usedPercent": round(ctx.rate_used), "windowDurationMins": 300, "resetsAt": reset},
            "secondary": {
                "usedPercent": round(ctx.rate_used / 4),
                "windowDurationMins": 10080,
                "resetsAt": reset + 86400,
            },
            "credits": None,
        }
        if self.legacy:
            del limits["limitId"]
        return self.note("account/rateLimits/updated", {"rateLimits": limits})


def _snake(usage: dict[str, int]) -> dict[str, int]:
    return {
        "input_tokens": usage["inputTokens"],
        "cached_input_tokens": usage["cachedInputTokens"],
        "output_tokens": usage["outputTokens"],
        "reasoning_output_tokens": usage["reasoningOutputTokens"],
        "total_tokens": usage["totalTokens"],
    }


def events(profile: Profile, seed: int, templates: Templates | None = None) -> Iterator[Event]:
    """An endless interleaving of `profile.threads` conversations."""
    ctx = Ctx(profile, seed, templates or Templates.empty())
    convs = [Conversation(ctx, legacy=i < profile.legacy_threads) for i in range(profile.threads)]
    streams = [c.run() for c in convs]
    rng = ctx.rng
    current = 0
    while True:
        # Conversations run in bursts, as concurrent agents do: switch now and then.
        if rng.random() < 0.05:
            current = rng.randrange(len(streams))
        yield next(streams[current])


def write(path: Path, profile: Profile, count: int, seed: int, templates: Templates | None = None) -> int:
    """Write `count` lines to `path`; returns the number of bytes written."""
    dumps = orjson.dumps
    total = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb", buffering=1 << 20) as f:
        chunk: list[bytes] = []
        for i, ev in enumerate(events(profile, seed, templates), 1):
            chunk.append(dumps(ev))
            if len(chunk) == 4096 or i == count:
                data = b"\n".join(chunk) + b"\n"
                f.write(data)
                total += len(data)
                chunk.clear()
            if i == count:
                break
    tmp.replace(path)
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="codex")
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-fixtures", action="store_true", help="do not take shapes from fixtures/")
    args = ap.parse_args(argv)
    tpl = Templates.empty() if args.no_fixtures else Templates.load()
    size = write(args.out, PROFILES[args.profile], args.events, args.seed, tpl)
    print(f"{args.out}: {args.events} events, {size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
