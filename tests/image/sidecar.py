"""The image's daemon as a sidecar: its volumes, its metrics port, the streams fed into its socket.

Shared by the sidecar and deploy/ checks. The daemon's metrics listen on the host's port 9464 (buildah's
chroot containers share the host's network), the port the image's default command names.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tests.helpers.convex_e2e import REPO, daemon_env, dump_history, http_get, ingestor_argv
from tests.image.built_image import Running, config

METRICS: Final = "http://127.0.0.1:9464"
# The program the image's entrypoint (`ingestor`) runs, as the daemon's process names it.
DAEMON: Final = "/opt/ingestor/bin/ingestor"
APP_SERVER_STREAMS: Final = REPO / "fixtures" / "codex-0.169.0" / "app-server"


def image_uid_gid() -> tuple[int, int]:
    uid, gid = config()["User"].split(":")
    return int(uid), int(gid)


@dataclass(frozen=True)
class Volumes:
    """Host directories mounted where the image expects them, writable by the image's user."""

    socket_dir: Path
    state_dir: Path

    @classmethod
    def make(cls, root: Path) -> Volumes:
        volumes = cls(root / "socket", root / "state")
        uid, gid = image_uid_gid()
        for directory in (volumes.socket_dir, volumes.state_dir):
            directory.mkdir(parents=True)
            os.chown(directory, uid, gid)
        return volumes

    def mounts(self) -> dict[Path, str]:
        return {self.socket_dir: "/run/ingestor", self.state_dir: "/var/lib/ingestor"}


def assert_metrics_port_free() -> None:
    with socket.socket() as probe:
        # As the daemon's server binds: a closed connection of the last sidecar (TIME_WAIT) is no owner.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 9464))
        except OSError as error:
            raise AssertionError(
                f"port 9464 is taken on this machine ({error}): the sidecar needs it"
            ) from None


def wait_until_listening(sidecar: Running, socket_path: Path, timeout: float = 60) -> None:
    """Its socket exists and /healthz answers."""
    deadline = time.monotonic() + timeout
    while not (socket_path.is_socket() and http_get(f"{METRICS}/healthz")[0] == 200):
        if sidecar.process.poll() is not None:
            raise AssertionError(f"the sidecar exited: {sidecar.process.communicate()[1].decode()[-4000:]}")
        assert time.monotonic() < deadline, "the sidecar never listened"
        time.sleep(0.1)


def metric(name: str) -> float:
    """One unlabelled sample of the sidecar's /metrics."""
    status, text = http_get(f"{METRICS}/metrics")
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def wait_until_read(lines: int, timeout: float = 60) -> None:
    """The daemon has read this many input lines since it started."""
    deadline = time.monotonic() + timeout
    while metric("ingestor_events_read_total") < lines:
        assert time.monotonic() < deadline, f"the daemon never read {lines} lines"
        time.sleep(0.05)


def wait_until_spooled(timeout: float = 10) -> None:
    """Operations are waiting in the spool (read, not yet confirmed by Convex)."""
    deadline = time.monotonic() + timeout
    while metric("ingestor_spool_ops") == 0:
        assert time.monotonic() < deadline, "nothing waited in the spool"
        time.sleep(0.02)


def send(socket_path: Path, stream: bytes) -> None:
    """One producer connection carrying a whole recorded stream, as the worker's forwarder would."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(str(socket_path))
        connection.sendall(stream)


def host_daemon_history(
    url: str, key: str, state_dir: Path, streams: Sequence[Path], conversations: Sequence[str]
) -> dict[str, Any]:
    """What the host's own daemon stores for the same recorded streams (`ingestor replay`)."""
    replay = subprocess.run(
        ingestor_argv("replay", url, state_dir, *map(str, streams)),
        env=daemon_env(CONVEX_ADMIN_KEY=key),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr.decode(errors="replace")[-4000:]
    return dump_history(url, conversations)
