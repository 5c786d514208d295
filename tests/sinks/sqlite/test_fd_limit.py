"""Every file descriptor taken (more producers than the fd limit) while the SQLite sink writes: its
background checkpoints cannot open the store's files then. That must cost a checkpoint, never the
daemon (ingestor.sinks.sqlite). Run in a child process, whose fd limit is lowered."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from ingestor.sinks.sqlite.sink import CHECKPOINT_EVERY_BATCHES

CHILD = """
import os, resource, sys
import anyio
from ingestor.sinks.sqlite.sink import CHECKPOINT_EVERY_BATCHES, open_sqlite_sink

def event(i):
    args = dict(conversationId="c", method="m", payload=i, receivedAt=i)
    return {"op": "appendEvent", "key": f"e{i}", "args": args}

async def main(path, batches):
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    async with open_sqlite_sink(path) as sink:
        await sink.write([event(0)])
        taken = []
        try:
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass  # EMFILE: every descriptor is taken, as accept() takes them under a storm
        for i in range(1, batches):
            await sink.write([event(i)])
            await anyio.sleep(0.01)  # let the background checkpoints run (and fail) meanwhile
        for fd in taken:
            os.close(fd)
        for i in range(batches, batches + CHECKPOINT_EVERY_BATCHES + 1):  # one more checkpoint at least
            await sink.write([event(i)])
            await anyio.sleep(0.01)

anyio.run(main, sys.argv[1], int(sys.argv[2]))
"""


def test_checkpoints_that_cannot_open_a_file_do_not_end_the_sink(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    batches = 40  # more than CHECKPOINT_EVERY_BATCHES twice: checkpoints start with no fd left
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), str(batches)], capture_output=True, text=True, timeout=120
    )
    log = child.stdout + child.stderr
    assert child.returncode == 0, log[-3000:]
    assert log.count("background checkpoint failed") == 1  # once per incident, not once per attempt
    assert "background checkpoints work again" in log
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*), sum(payload) FROM events_raw").fetchone()
    written = batches + CHECKPOINT_EVERY_BATCHES + 1
    assert stored == (written, sum(range(written)))
