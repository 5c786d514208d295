"""A conversation as one self-contained HTML page: inline CSS, no script, no external resource, so it
opens offline and can be mailed as is. Long outputs and diffs are collapsed (`<details>`), every
stored text escaped (`html.escape`, control characters shown as `\\x1b`)."""

from __future__ import annotations

import html
from typing import Any, Final

from ingestor.cli.export import Row, call_parts, timeline, turn_usage, usage_line
from ingestor.cli.show import escape_controls, fmt_time

COLLAPSE_LINES: Final = 12
"""Blocks longer than this many lines start collapsed, with their line count on the summary."""

_STYLE: Final = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
  color: #1d1d1f; background: #fff; }
h1 { font-size: 1.4rem; word-break: break-all; } h2 { font-size: 1.15rem; margin-top: 2rem;
  border-bottom: 1px solid #ddd; }
.meta, .facts, .usage { color: #555; font-size: .9rem; }
.msg { margin: .8rem 0; padding: .5rem .8rem; border-radius: 6px; white-space: pre-wrap; }
.user { background: #e8f0fe; } .assistant { background: #f1f8e9; } .tool { background: #fff8e1; }
.reasoning { border-left: 3px solid #b39ddb; padding-left: .8rem; color: #4a4a6a; font-style: italic;
  white-space: pre-wrap; }
.call { margin: .8rem 0; border: 1px solid #ddd; border-radius: 6px; padding: .5rem .8rem; }
.call .title { font-family: ui-monospace, monospace; font-weight: bold; word-break: break-all; }
pre { background: #f6f8fa; padding: .5rem; overflow-x: auto; margin: .3rem 0; }
.label { font-size: .8rem; font-variant: small-caps; color: #777; }
.error { color: #b00020; }
"""


_POLICY: Final = "default-src 'none'; style-src 'unsafe-inline'"


def _e(text: Any) -> str:
    return html.escape(escape_controls(str(text)))


def _block(caption: str, text: str) -> str:
    lines = text.rstrip("\n").count("\n") + 1
    body = f"<pre>{_e(text.rstrip(chr(10)))}</pre>"
    if lines > COLLAPSE_LINES:
        return f"<details><summary>{_e(caption)} ({lines} lines)</summary>{body}</details>"
    return f'<div class="label">{_e(caption)}</div>{body}'


def _item(kind: str, item: Row, outputs: dict[str, Any]) -> str:
    if kind == "message":
        role = str(item.get("role"))
        label = {"user": "User", "assistant": "Assistant", "tool": "Plan"}.get(role, role)
        return (
            f'<div class="msg {_e(role)}"><div class="label">{_e(label)}</div>'
            f"{_e(item.get('content', ''))}</div>"
        )
    if kind == "reasoning":
        texts = "\n\n".join(str(t) for t in item.get("summaryText") or [])
        return f'<div class="reasoning"><div class="label">Reasoning</div>{_e(texts)}</div>' if texts else ""
    call_kind, title, facts, blocks = call_parts(item, outputs.get(item["callId"]))
    parts = [
        f'<div class="call"><div class="label">{_e(call_kind)}</div>',
        f'<div class="title">{_e(title)}</div>',
    ]
    if facts:
        parts.append(f'<div class="facts">{_e(", ".join(facts))}</div>')
    parts.extend(_block(caption, text) for caption, text, _ in blocks)
    parts.append("</div>")
    return "".join(parts)


def render(data: Row) -> str:
    conversation = data["conversation"]
    used = turn_usage(data)
    title = f"Conversation {conversation['conversationId']}"
    meta = [
        f"{name} {conversation[name]}"
        for name in ("threadId", "clientName", "modelProvider")
        if conversation.get(name)
    ]
    meta.append(f"started {fmt_time(conversation.get('startedAt'))}")
    meta.append(f"last activity {fmt_time(conversation.get('lastSeenAt'))}")
    body = [f"<h1>{_e(title)}</h1>", f'<p class="meta">{_e(" · ".join(meta))}</p>']
    for number, turn in enumerate(data["turns"], 1):
        row = turn["turn"]
        body.append(f"<section><h2>Turn {number}: {_e(row.get('status'))}</h2>")
        facts = [row["turnId"], fmt_time(row.get("startedAt"))] + (
            [f"model {row['model']}"] if row.get("model") else []
        )
        body.append(f'<p class="meta">{_e(" · ".join(facts))}</p>')
        if row.get("error"):
            body.append(f'<p class="error">{_e(row["error"])}</p>')
        body.extend(_item(kind, item, turn["outputs"]) for kind, item in timeline(turn))
        line = usage_line(used.get(row["turnId"]))
        if line:
            body.append(f'<p class="usage">Usage: {_e(line)}</p>')
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No script, no fetch: the page is data only, whoever opens it.
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
