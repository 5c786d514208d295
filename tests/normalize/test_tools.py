"""The shapes of tool calls (ingestor/normalize/tools.py), with plain data."""

from __future__ import annotations

from ingestor.normalize import tools


def test_patch_text_gives_every_change_resolved_against_the_cwd() -> None:
    patch = (
        "*** Begin Patch\n*** Add File: a.txt\n+one\n+two\n*** Update File: sub/b.txt\n*** Move to: c.txt\n"
        "@@\n-old\n+new\n*** Delete File: /abs/d.txt\n*** End Patch\n"
    )
    assert tools.patch_changes(patch, "/work") == [
        {"path": "/work/a.txt", "kind": "add", "diff": "one\ntwo\n"},
        {"path": "/work/sub/b.txt", "kind": "update", "movePath": "/work/c.txt", "diff": "@@\n-old\n+new\n"},
        {"path": "/abs/d.txt", "kind": "delete"},
    ]
    fields = tools.file_fields(tools.patch_changes(patch, None), patch)
    assert fields["command"] == ["apply_patch", "/abs/d.txt", "a.txt", "sub/b.txt"]
    assert fields["parsedCmd"]["patch"] == patch and fields["source"] == "file"


def test_a_moved_file_is_the_same_call_whether_or_not_the_channel_tells_where_to() -> None:
    """exec's `file_change` names no move destination: `command` (the call's identity across
    channels) is the changed paths, as the session file's patch gives them too."""
    patch = (
        "*** Begin Patch\n*** Update File: n.txt\n*** Move to: r.txt\n@@\n-a\n+b\n*** Delete File: o.txt\n"
    )
    from_file = tools.file_fields(tools.patch_changes(patch + "*** End Patch\n", "/w"))
    from_exec = tools.file_fields(
        tools.exec_changes([{"path": "/w/n.txt", "kind": "update"}, {"path": "/w/o.txt", "kind": "delete"}])
    )
    assert from_file["command"] == from_exec["command"] == ["apply_patch", "/w/n.txt", "/w/o.txt"]
    assert from_file["parsedCmd"]["changes"][0]["movePath"] == "/w/r.txt"


def test_changes_keyed_by_path_and_listed_agree() -> None:
    keyed = {
        "/w/b": {"type": "update", "unified_diff": "@@", "move_path": "/w/c"},
        "/w/a": {"type": "add", "content": "x"},
    }
    listed = [
        {"path": "/w/a", "kind": {"type": "add"}, "diff": "x"},
        {"path": "/w/b", "kind": {"type": "update", "move_path": "/w/c"}, "diff": "@@"},
    ]
    assert tools.file_fields(tools.keyed_changes(keyed)) == tools.file_fields(tools.v2_changes(listed))


def test_mcp_names_in_session_files() -> None:
    assert tools.split_mcp_name("mcp__srv__do_it", None) == ("srv", "do_it")
    assert tools.split_mcp_name("do_it", "mcp__srv") == ("srv", "do_it")
    assert tools.split_mcp_name("shell", None) is None
    assert tools.split_mcp_name("mcp__srv", None) is None


def test_mcp_result_text_and_error_are_readable() -> None:
    result = {"content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]}
    fields = tools.mcp_fields("srv", "t", {"$schema": 1}, result, None)
    assert (fields["stdout"], fields["aggregatedOutput"], fields["stderr"]) == ("a\nb", "a\nb", None)
    assert fields["parsedCmd"] == {
        "type": "mcpToolCall",
        "server": "srv",
        "tool": "t",
        "arguments": {"$schema": 1},
        "result": result,
    }
    failed = tools.mcp_fields("srv", "t", {}, None, "boom")
    assert (failed["aggregatedOutput"], failed["stderr"], failed["parsedCmd"]["error"]) == (
        "boom",
        "boom",
        "boom",
    )


def test_web_search_target_is_the_query_else_what_the_action_names() -> None:
    assert tools.search_fields("q", None)["command"] == ["web_search", "q"]
    assert tools.search_fields("", {"type": "openPage", "url": "https://x"})["command"] == [
        "web_search",
        "https://x",
    ]
    assert tools.search_fields(None, {"type": "findInPage", "pattern": "p"})["command"] == ["web_search", "p"]
    assert tools.search_fields(None, {"type": "search", "queries": ["a", "b"]})["command"] == [
        "web_search",
        "a | b",
    ]
    assert tools.search_fields("", {"type": "search"})["command"] is None


def test_plan_steps_in_every_spelling() -> None:
    assert tools.plan_steps(
        [{"step": "a", "status": "in_progress"}, {"step": "b", "status": "inProgress"}]
    ) == [
        {"step": "a", "status": "inProgress"},
        {"step": "b", "status": "inProgress"},
    ]
    assert tools.plan_steps(
        [{"text": "a", "completed": True}, {"text": "b", "completed": False}, "junk"]
    ) == [
        {"step": "a", "status": "completed"},
        {"step": "b", "status": "pending"},
    ]


def test_a_shell_call_running_apply_patch_is_a_patch() -> None:
    patch = "*** Begin Patch\n*** Add File: a\n+x\n*** End Patch\n"
    assert tools.shell_patch(f"apply_patch <<'EOF'\n{patch}EOF") == patch
    assert tools.shell_patch(["bash", "-lc", f"apply_patch <<'EOF'\n{patch}EOF\n"]) == patch
    assert tools.shell_patch("cat <<'EOF'\n*** Begin Patch\n*** End Patch\nEOF") is None
    assert tools.shell_patch("apply_patch --help") is None
