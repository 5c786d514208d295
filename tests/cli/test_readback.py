"""Reading back what was captured, as a user does from the command line: `show conversations`,
`show turn|command|events` with their filters, `usage`, `export` (Markdown, HTML opened in a real
headless Chromium, JSON), on a store filled by `ingestor replay` from real recordings."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import orjson
import pytest

from ingestor.sinks.sqlite.history import open_sqlite_history

REPO: Final = Path(__file__).resolve().parents[2]
FIXTURES: Final = REPO / "fixtures"
RECORDINGS: Final = (
    "codex-0.169.0/sessions/exec-multi_turn",
    "codex-0.169.0/app-server/tools.jsonl",
    "codex-0.169.0/app-server/streamed_output.jsonl",
    "codex-0.169.0/app-server/large_output.jsonl",
    "codex-0.63.0/exec/multi_turn.jsonl",
    "codex-0.63.0/app-server/two_threads.jsonl",
    "codex-0.63.0/app-server/command_outputs.jsonl",
)
# Call ids are the model server's (`call_<scenario>_...`): recordings of one scenario by both Codex
# versions share them, so one store holds at most one recording of each scenario (two of the same
# call would be one command, as they would be in Codex).


def ingestor(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
    result = subprocess.run(
        [sys.executable, "-m", "ingestor", *args], capture_output=True, text=True, env=env, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def summary(stderr: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    found: dict[str, Any] = next(line for line in lines if line.get("event") == "pipeline done")
    return found


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("readback")
    sink = f"--sink=sqlite:{work / 'store.db'}"
    paths = [str(FIXTURES / name) for name in RECORDINGS]
    first = summary(ingestor("replay", *paths, sink).stderr)
    second = summary(ingestor("replay", *paths, sink).stderr)
    yield {"sink": sink, "work": work, "first": first, "second": second}


def show_json(store: dict[str, Any], *args: str) -> Any:
    return json.loads(ingestor("show", *args, "--json", store["sink"]).stdout)


def test_replay_names_the_conversations_and_a_second_replay_stores_nothing_new(store: dict[str, Any]) -> None:
    first, second = store["first"], store["second"]
    listed = show_json(store, "conversations")
    assert first["conversations"] == second["conversations"] == len(listed) == 8
    assert sorted(first["conversation_ids"]) == sorted(row["conversationId"] for row in listed)
    assert first["rows_new"] > 500 and first["rows_rejected"] == 0
    # Nothing new; a few rows move their last-seen times (exec --json lines carry no time: read now).
    assert second["rows_new"] == 0
    assert second["rows_already_stored"] > 0.9 * second["ops_written"]


def _history(store: dict[str, Any]) -> dict[str, Any]:
    """Every conversation with its turns (getTurn results), read in process."""

    async def read() -> dict[str, Any]:
        async with open_sqlite_history(store["sink"].removeprefix("--sink=sqlite:")) as reader:
            out = {}
            for row in (await reader.list_conversations(None, 1000))[0]:
                detail = await reader.get_conversation(row["conversationId"])
                assert detail is not None
                out[row["conversationId"]] = [await reader.get_turn(t["turnId"]) for t in detail["turns"]]
            return out

    return anyio.run(read)


def test_show_conversations_lists_each_with_its_counts_recent_first(store: dict[str, Any]) -> None:
    rows = show_json(store, "conversations")
    assert [r["lastSeenAt"] for r in rows] == sorted((r["lastSeenAt"] for r in rows), reverse=True)
    history = _history(store)
    assert sorted(history) == sorted(r["conversationId"] for r in rows)
    for row in rows:
        turns = history[row["conversationId"]]
        assert row["turns"] == len(turns)
        calls = [c for t in turns for c in t["commands"]]
        tools = [c for c in calls if c.get("source") in ("file", "mcp", "search")]
        assert (row["commands"], row["toolCalls"]) == (len(calls) - len(tools), len(tools))
        models = [t["turn"]["model"] for t in turns if t["turn"].get("model")]
        assert row.get("model") == (models[-1] if models else None)
    # Session files and 0.169's thread/started name the directory, else a command's cwd does; 0.63's
    # exec --json and thread/started name none: its exec thread and its command-less thread have none.
    assert sum("cwd" in r for r in rows) == len(rows) - 2
    assert all(r["cwd"].endswith("/cwd") for r in rows if "cwd" in r)
    by_thread = {r["threadId"]: r for r in rows}
    assert by_thread["01a2014c-efee-7c40-8c50-847b0a5ef8a2"]["clientName"] == "codex_exec"
    text = ingestor("show", "conversations", store["sink"]).stdout
    assert all(r["threadId"] in text for r in rows)


def test_show_conversations_filters(store: dict[str, Any]) -> None:
    rows = show_json(store, "conversations")
    tools = next(r for r in rows if r.get("model") == "gpt-5.5")
    assert show_json(store, "conversations", "--model", "gpt-5.5") == [tools]
    assert show_json(store, "conversations", "--cwd", str(Path(tools["cwd"]).parent)) == [tools]
    assert show_json(store, "conversations", "--cwd", tools["cwd"] + "x") == []
    assert show_json(store, "conversations", "--limit", "2") == rows[:2]
    assert show_json(store, "conversations", "--since", "2100-01-01") == []
    assert show_json(store, "conversations", "--until", "2000-01-01") == []
    # The session files were recorded on 2026-11-22: active then, started no later.
    old = show_json(store, "conversations", "--until", "2026-11-22", "--since", "2026-11-22")
    assert old and all(r["startedAt"] < 1795392000000 for r in old)


def test_show_command_prints_the_output_codex_did_not_stream(store: dict[str, Any]) -> None:
    """0.169 missed the first output delta of this command (`tick 1`): its final aggregatedOutput
    has it, and is what `show command` prints, said so."""
    data = show_json(store, "command", "call_streamed_output_001_0")
    assert data["chunkCount"] == 2 and "tick 1" not in data["stdout"] and data["merged"] is True
    assert data["aggregatedOutput"] == "tick 1\ntick 2\ntick 3\n"
    text = ingestor("show", "command", "call_streamed_output_001_0", store["sink"]).stdout
    assert "stdout and stderr merged, as Codex reported it at the end" in text
    assert "  tick 1\n  tick 2\n  tick 3\n" in text


def test_show_turn_quotes_commands_and_points_to_show_command(store: dict[str, Any]) -> None:
    call = show_json(store, "command", "call_large_output_001_0")
    turn_id = next(
        t["turnId"]
        for r in show_json(store, "conversations")
        for t in show_json(store, "conversation", r["conversationId"])["turns"]
        if any(
            c["callId"] == "call_large_output_001_0"
            for c in show_json(store, "turn", t["turnId"])["commands"]
        )
    )
    text = ingestor("show", "turn", turn_id, store["sink"]).stdout
    dollar = next(line for line in text.splitlines() if line.startswith("  $ "))
    assert shlex.split(dollar[4:]) == call["call"]["command"]
    assert "more lines; all of it: ingestor show command call_large_output_001_0)" in text
    assert len(text.splitlines()) < 80


def test_show_turn_indents_every_line_of_a_reasoning_section() -> None:
    from ingestor.cli.show import render_turn

    turn = {"turn": {"turnId": "t", "status": "completed"}, "messages": [], "commands": []}
    turn.update(usageSnapshots=[], rateLimits=[])
    turn["reasoningSections"] = [{"summaryText": ["**Plan**\n\nfirst\nsecond"]}]
    assert "  - **Plan**\n\n    first\n    second" in render_turn(turn)


def test_show_events_filters(store: dict[str, Any]) -> None:
    conversation = next(r for r in show_json(store, "conversations") if r.get("model") == "gpt-5.5")
    cid = conversation["conversationId"]
    every = show_json(store, "events", cid)
    items = show_json(store, "events", cid, "--method", "item/*")
    assert items == [e for e in every if e["method"].startswith("item/")] and items
    turn_id = show_json(store, "conversation", cid)["turns"][1]["turnId"]
    assert show_json(store, "events", cid, "--turn", turn_id) == [
        e for e in every if e.get("turnId") == turn_id
    ]
    assert show_json(store, "events", cid, "--tail", "3") == every[-3:]
    assert show_json(store, "events", cid, "--method", "item/*", "--tail", "2") == items[-2:]
    assert (
        ingestor(
            "show", "events", cid, "--method", "nothing/like/this", store["sink"], check=False
        ).returncode
        == 0
    )


def test_usage_json_rows(store: dict[str, Any]) -> None:
    for by, keys in (("day", {"date"}), ("session", {"conversationId", "threadId"}), ("model", {"model"})):
        rows = json.loads(ingestor("usage", "--by", by, "--json", store["sink"]).stdout)
        counters = {
            "inputTokens",
            "cachedInputTokens",
            "outputTokens",
            "reasoningOutputTokens",
            "totalTokens",
        }
        assert rows and all(set(row) == keys | counters for row in rows)
    text = ingestor("usage", "--by", "model", "--cost", store["sink"]).stdout
    assert "estimate" in text and "gpt-5.5" in text


def _facts(name: str) -> dict[str, Any]:
    entries = orjson.loads((FIXTURES / "manifest.json").read_bytes())["files"]
    facts: dict[str, Any] = next(e for e in entries if e["path"] == name)["facts"]
    return facts


TOOLS: Final = "codex-0.169.0/app-server/tools.jsonl"


def _tools_conversation(store: dict[str, Any]) -> str:
    return str(
        next(r for r in show_json(store, "conversations") if r.get("model") == "gpt-5.5")["conversationId"]
    )


def test_export_markdown_has_every_prompt_call_and_usage(store: dict[str, Any]) -> None:
    cid = _tools_conversation(store)
    out = store["work"] / "tools.md"
    ingestor("export", "conversation", cid, "--format", "md", "-o", str(out), store["sink"])
    text = out.read_text()
    facts = _facts(TOOLS)
    for turn in facts["turns"]:
        assert turn["prompt"] in text
    assert text.count("## Turn ") == len(facts["turns"])
    assert text.count("*Usage: ") == len(facts["turns"])
    assert "**MCP call:** `fixture/lookup`" in text and "**Web search:**" in text and "```diff" in text
    assert "second line, edited" in text  # the update's diff
    assert "**Plan:**" in text


def test_export_json_is_the_gathered_history(store: dict[str, Any]) -> None:
    cid = _tools_conversation(store)
    data = json.loads(ingestor("export", "conversation", cid, "--format", "json", store["sink"]).stdout)
    assert data["conversation"]["conversationId"] == cid
    assert [t["turn"]["turnId"] for t in data["turns"]] == [
        t["turnId"] for t in show_json(store, "conversation", cid)["turns"]
    ]
    for turn in data["turns"]:
        assert set(turn["outputs"]) <= {c["callId"] for c in turn["commands"]}


def test_export_of_an_unknown_conversation_exits_1(store: dict[str, Any]) -> None:
    result = ingestor("export", "conversation", "nope", store["sink"], check=False)
    assert result.returncode == 1 and "no conversation 'nope'" in result.stderr


def test_export_html_is_self_contained_and_renders_in_chromium(store: dict[str, Any]) -> None:
    cid = _tools_conversation(store)
    page = store["work"] / "tools.html"
    ingestor("export", "conversation", cid, "--format", "html", "-o", str(page), store["sink"])
    html = page.read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.IGNORECASE), (
        "an external resource"
    )
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium: scripts/bootstrap --browser installs it (apt-get install chromium)")
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    # What Chromium made of the page: every prompt and the collapsed/expanded structure.
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for turn in _facts(TOOLS)["turns"]:
        assert turn["prompt"] in dom.stdout
    shot = store["work"] / "tools.png"
    result = subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1000, 1400)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 16) or []
        # Rendered, not blank: text in many shades, the white page, and the coloured message boxes.
        assert len(colours) > 50
        assert (255, 255, 255) in {c for _, c in colours}
        assert (232, 240, 254) in {c for _, c in colours}, "the user prompt's box (#e8f0fe) is not on screen"
        dark = sum(n for n, (r, g, b) in colours if r + g + b < 200)
        assert dark > 2000, "hardly any text on the page"
