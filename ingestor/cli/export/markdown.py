"""A conversation as Markdown: headings per turn, prompts and answers as text, reasoning as quotes,
each tool call with its command or diff or MCP call and its output in fenced blocks."""

from __future__ import annotations

import re
from typing import Any

from ingestor.cli.export import Row, call_parts, timeline, turn_usage, usage_line
from ingestor.cli.show import escape_controls, fmt_time


def _fence(text: str, lang: str = "") -> list[str]:
    # A fence longer than any backtick run inside, so no output can close it early.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + lang, text.rstrip("\n"), fence]


def _quote(text: str) -> list[str]:
    return ["> " + line if line else ">" for line in text.rstrip("\n").split("\n")]


def render(data: Row) -> str:
    conversation = data["conversation"]
    used = turn_usage(data)
    out = [f"# Conversation {conversation['conversationId']}", ""]
    for name in ("threadId", "clientName", "modelProvider"):
        if conversation.get(name):
            out.append(f"- {name}: `{conversation[name]}`")
    started, last = fmt_time(conversation.get("startedAt")), fmt_time(conversation.get("lastSeenAt"))
    out.append(f"- started {started}, last activity {last}")
    for number, turn in enumerate(data["turns"], 1):
        row = turn["turn"]
        out += ["", f"## Turn {number}: {row.get('status')}", ""]
        facts = [f"`{row['turnId']}`", fmt_time(row.get("startedAt"))]
        if row.get("model"):
            facts.append(f"model `{row['model']}`")
        out.append(", ".join(facts))
        if row.get("error"):
            out += ["", f"**Error:** {row['error']}"]
        for kind, item in timeline(turn):
            out.append("")
            out += _item(kind, item, turn["outputs"])
        line = usage_line(used.get(row["turnId"]))
        if line:
            out += ["", f"*Usage: {line}.*"]
    return escape_controls("\n".join(out) + "\n")


def _item(kind: str, item: Row, outputs: dict[str, Any]) -> list[str]:
    if kind == "message":
        role = str(item.get("role"))
        label = {"user": "User", "assistant": "Assistant", "tool": "Plan"}.get(role, role.capitalize())
        text = str(item.get("content", ""))
        return [f"**{label}:**", "", *(_fence(text) if role == "tool" else [text])]
    if kind == "reasoning":
        lines = ["**Reasoning:**", ""]
        for text in item.get("summaryText") or []:
            lines += [*_quote(str(text)), ">"]
        return lines[:-1]
    call_kind, title, facts, blocks = call_parts(item, outputs.get(item["callId"]))
    label = call_kind[0].upper() + call_kind[1:]  # "MCP call" stays MCP
    lines = [f"**{label}:** `{title}`" if "`" not in title else f"**{label}:**"]
    if "`" in title:
        lines += ["", *_fence(title, "sh")]
    if facts:
        lines += ["", ", ".join(facts)]
    for caption, text, lang in blocks:
        lines += ["", f"{caption}:", "", *_fence(text, lang)]
    return lines
