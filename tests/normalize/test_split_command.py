"""A huge command string costs nothing on the event loop: past `SPLIT_MAX_CHARS` it is kept whole
rather than split by shell rules (shlex takes about 1.3 s per MiB; ingestor.normalize.app_server)."""

from __future__ import annotations

import orjson

from ingestor.lines import Line
from ingestor.normalize import Normalizer
from ingestor.normalize.app_server import SPLIT_MAX_CHARS
from tests.helpers.daemon import RECORDINGS

RECORDING = RECORDINGS / "app-server" / "command_outputs.jsonl"


def commands_with(command: str) -> list[object]:
    """The argv stored for every command of the recording, each given `command` as its string."""
    normalizer = Normalizer("test")
    argvs = []
    for ordinal, data in enumerate(RECORDING.read_bytes().splitlines()):
        message = orjson.loads(data)
        item = message.get("params", {}).get("item")
        if isinstance(item, dict) and item.get("type") == "commandExecution":
            item["command"] = command
        for op in normalizer.feed(Line("test", ordinal, 0, orjson.dumps(message))):
            if op["op"] == "upsertCommand" and "command" in op["args"]:
                argvs.append(op["args"]["command"])
    assert argvs
    return argvs


def test_a_4_mib_command_is_stored_whole() -> None:
    command = "printf '%s' " + "'word' " * (4 * 1024 * 1024 // 7)
    assert all(argv == [command] for argv in commands_with(command))


def test_a_command_up_to_the_limit_is_split_by_shell_rules() -> None:
    command = "echo " + "x" * (SPLIT_MAX_CHARS - len("echo "))
    assert all(argv == ["echo", "x" * (SPLIT_MAX_CHARS - 5)] for argv in commands_with(command))
