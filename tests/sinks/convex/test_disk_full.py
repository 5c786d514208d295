"""A full state volume acts like a full spool (ingestor.sinks.convex): input pauses,
`/readyz` says why, the daemon lives on; and a daemon started on a volume that is still full drains
its spool. The volume is a small tmpfs mounted for the test; where the test may not mount (not
root), it runs again inside a user and mount namespace of its own (`unshare -Urm`), where it may;
skipped only where neither is allowed."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.helpers.convex_e2e import FIXTURES, call, daemon_env, ingestor_argv
from tests.helpers.convex_local import ConvexLocal
from tests.helpers.daemon import another_session, free_port, unreachable_url

pytestmark = pytest.mark.e2e

RECORDING = (FIXTURES / "app-server" / "large_output.jsonl").read_bytes()
VOLUME_BYTES = 12 * 1024 * 1024
IN_NAMESPACE = "INGESTOR_TEST_IN_USERNS"
"""Set in the run inside `unshare -Urm`; set it to 1 to take that path where root could mount."""


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "state"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={VOLUME_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def spooled_events_by_conversation(state: Path) -> dict[str, int]:
    with sqlite3.connect(state / "spool.sqlite3") as conn:
        rows = conn.execute("SELECT segment, offset, length FROM spool").fetchall()
    keys: dict[str, set[str]] = {}
    for segment, offset, length in rows:
        with (state / f"spool.sqlite3.{segment:08d}.seg").open("rb") as data:
            data.seek(offset)
            for op in data.read(length).split(b",\n"):
                parsed = orjson.loads(op)
                if parsed["op"] == "appendEvent":  # a key spooled twice (a repeated line) is one row
                    keys.setdefault(parsed["args"]["conversationId"], set()).add(parsed["key"])
    return {conversation: len(found) for conversation, found in keys.items()}


def stored_events(convex: ConvexLocal, conversation: str) -> int:
    count, cursor = 0, None
    while True:
        args = {"conversationId": conversation, "paginationOpts": {"numItems": 500, "cursor": cursor}}
        page = call(convex.url, "query", "history:listEvents", args, convex.admin_key)
        count += len(page["page"])
        if page["isDone"]:
            return count
        cursor = page["continueCursor"]


def _produce(sock: Path, stop: threading.Event) -> None:
    index = 0
    while not stop.is_set():
        with socket.socket(socket.AF_UNIX) as producer:
            producer.connect(str(sock))
            producer.settimeout(0.5)
            try:
                producer.sendall(another_session(RECORDING, index))
            except (TimeoutError, OSError):
                return  # the daemon stopped reading: the volume is full
        index += 1


def test_a_full_volume_pauses_input_and_a_restart_on_it_drains(
    small_volume: Path, tmp_path: Path, convex_local: ConvexLocal
) -> None:
    convex_local.reset()
    state, sock, port = small_volume, tmp_path / "in.sock", free_port()
    # Convex down: nothing leaves the spool, which fills the volume.
    daemon = subprocess.Popen(
        ingestor_argv("run", unreachable_url(), state, "--unix", str(sock), f"--metrics=127.0.0.1:{port}",
                      "--flush-timeout=1", "--spool-max-bytes=1GiB"),
        env=daemon_env(),
        stderr=subprocess.PIPE,
    )  # fmt: skip
    stop = threading.Event()
    try:
        while not sock.exists():
            assert daemon.poll() is None, daemon.stderr.read().decode()[-3000:] if daemon.stderr else ""
            time.sleep(0.02)
        time.sleep(0.2)
        producer = threading.Thread(target=_produce, args=(sock, stop), daemon=True)
        producer.start()
        assert daemon.stderr is not None
        seen = b""
        while b"state volume full" not in seen:
            line = daemon.stderr.readline()
            assert line, seen.decode()[-3000:]
            seen += line
        time.sleep(1.5)  # an append or two retried on the full volume
        assert daemon.poll() is None, "the daemon died on the full volume"
        status, body = readyz(port)
        assert status == 503 and "disk_full" in body
        stop.set()
        producer.join(timeout=10)
        daemon.send_signal(signal.SIGTERM)
        _, rest = daemon.communicate(timeout=30)
    finally:
        stop.set()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    # Lines read and not yet spooled when the signal came could not be kept, and it says so.
    assert daemon.returncode in (0, 1), rest.decode()[-3000:]
    spooled = spooled_events_by_conversation(state)
    assert len(spooled) >= 2

    assert convex_local.admin_key is not None
    drain = subprocess.run(
        ingestor_argv("run", convex_local.url, state),
        input=b"",
        capture_output=True,
        env=daemon_env(CONVEX_ADMIN_KEY=convex_local.admin_key),
        timeout=120,
        check=False,
    )
    assert drain.returncode == 0, drain.stderr.decode()[-3000:]
    for conversation, count in spooled.items():
        assert stored_events(convex_local, conversation) == count
    with sqlite3.connect(state / "spool.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM spool").fetchone()[0] == 0


@pytest.mark.skipif(
    os.geteuid() == 0 and IN_NAMESPACE not in os.environ,
    reason="root mounts the volume itself (the test above); INGESTOR_TEST_IN_USERNS=1 takes this path",
)
def test_the_same_in_a_user_namespace_where_mounting_is_not_allowed() -> None:
    if os.environ.get(IN_NAMESPACE) == "inside":
        pytest.skip("already inside the namespace")
    if subprocess.run(["unshare", "-Urm", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("neither mounting nor a user namespace is allowed here: the full-volume test cannot run")
    test = f"{__file__}::test_a_full_volume_pauses_input_and_a_restart_on_it_drains"
    with tempfile.TemporaryDirectory(prefix="df-") as short:  # a socket path must stay under 108 bytes
        inside = subprocess.run(
            ["unshare", "-Urm", sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
             f"--basetemp={short}/t", test],
            capture_output=True,
            text=True,
            env={**os.environ, IN_NAMESPACE: "inside"},
            timeout=600,
            check=False,
        )  # fmt: skip
    output = inside.stdout + inside.stderr
    assert inside.returncode == 0 and "1 passed" in output, output[-3000:]
