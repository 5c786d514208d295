"""The image scripts/test-image built, run with buildah as a container runtime would run it.

No Docker engine runs here: `buildah run --isolation chroot` runs a command in a container of the
image, as the image's user, with its environment and the volumes given, on the host's network (so the
container reaches the local Convex stand-in on 127.0.0.1 and the host reaches its metrics port).
buildah does not run the image's default command by itself, so `default_command` reads it from the
image's config, and it answers SIGTERM by killing the command: `Container.signal` signals the
daemon's own process, as a runtime signals a container's main process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

IMAGE: Final = os.environ.get("INGESTOR_IMAGE", "")
BASE: Final = os.environ.get("INGESTOR_IMAGE_BASE", "")

needs_image = pytest.mark.skipif(
    not IMAGE, reason="checks of the built sidecar image: scripts/test-image builds it and runs them"
)


def inspect(image: str) -> dict[str, Any]:
    """`buildah inspect` of an image (its Docker-format config is `["Docker"]["config"]`)."""
    output = subprocess.run(
        ["buildah", "inspect", "--type", "image", image], capture_output=True, check=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def config(image: str = IMAGE) -> dict[str, Any]:
    """The image's run-time config as `docker build` records it: User, Env, Entrypoint, Cmd, ..."""
    result: dict[str, Any] = inspect(image)["Docker"]["config"]
    return result


def default_command(image: str = IMAGE) -> list[str]:
    """What `docker run IMAGE` runs: the entrypoint followed by the default arguments."""
    image_config = config(image)
    return [*image_config["Entrypoint"], *image_config["Cmd"]]


@contextlib.contextmanager
def container(image: str = IMAGE) -> Iterator[str]:
    """A working container of the image (buildah's), removed on the way out."""
    name = subprocess.run(
        ["buildah", "from", "--pull=never", "--quiet", image], capture_output=True, check=True, text=True
    ).stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


@contextlib.contextmanager
def mounted(image: str) -> Iterator[Path]:
    """The image's root file system, read from the host."""
    with container(image) as name:
        root = subprocess.run(
            ["buildah", "mount", name], capture_output=True, check=True, text=True
        ).stdout.strip()
        try:
            yield Path(root)
        finally:
            subprocess.run(["buildah", "umount", name], capture_output=True, check=False)


def _mount_over_image_volumes(name: str, image: str, volumes: Mapping[Path, str]) -> None:
    """Lets the given mounts win over the image's VOLUMEs, as in Docker and Kubernetes.

    buildah 1.28 also mounts its own anonymous volume at each image VOLUME and, in no fixed order,
    sometimes over the one given for the same path; so the working container forgets those VOLUMEs.
    """
    declared = config(image)["Volumes"] or {}
    for inside in volumes.values():
        if inside in declared:
            subprocess.run(
                ["buildah", "config", f"--volume={inside}-", name], capture_output=True, check=True
            )


def _run_argv(
    name: str, argv: Sequence[str], volumes: Mapping[Path, str], env: Mapping[str, str]
) -> list[str]:
    options = [f"--volume={host}:{inside}" for host, inside in volumes.items()]
    options += [f"--env={key}={value}" for key, value in env.items()]
    return ["buildah", "run", "--isolation=chroot", *options, name, "--", *argv]


def run(
    argv: Sequence[str],
    *,
    volumes: Mapping[Path, str] | None = None,
    env: Mapping[str, str] | None = None,
    image: str = IMAGE,
) -> subprocess.CompletedProcess[str]:
    """A command in a fresh container of the image, to its end."""
    with container(image) as name:
        _mount_over_image_volumes(name, image, volumes or {})
        return subprocess.run(
            _run_argv(name, argv, volumes or {}, env or {}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@dataclass
class Running:
    """A command running in a container: buildah's process, and the command's own under it."""

    process: subprocess.Popen[bytes]

    def _descendants(self) -> list[int]:
        found, pending = [], [self.process.pid]
        while pending:
            pid = pending.pop()
            for task in Path(f"/proc/{pid}/task").glob("*"):
                with contextlib.suppress(OSError):
                    children = [int(child) for child in (task / "children").read_text().split()]
                    found += children
                    pending += children
        return found

    def main_pid(self, program: str) -> int:
        """The process running `program` (buildah's chroot helper that started it also names it)."""
        for pid in reversed(self._descendants()):
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if not cmdline[0].endswith(b"buildah-chroot-exec") and program.encode() in cmdline:
                    return pid
        raise AssertionError(f"no process runs {program} in the container")

    def signal(self, program: str, sig: signal.Signals = signal.SIGTERM) -> None:
        os.kill(self.main_pid(program), sig)

    def kill(self) -> None:
        """SIGKILL to everything in the container, then to buildah (killed first, it would orphan them)."""
        for pid in reversed(self._descendants()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.kill()
        self.process.communicate()

    def stop(self, program: str, timeout: float = 60) -> tuple[int, bytes]:
        """SIGTERM to the command, as a runtime stops a container: its exit status and its stderr."""
        self.signal(program)
        _, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stderr


@contextlib.contextmanager
def started(
    argv: Sequence[str],
    *,
    volumes: Mapping[Path, str],
    env: Mapping[str, str],
    image: str = IMAGE,
) -> Iterator[Running]:
    """A command started in a fresh container of the image; killed on the way out if still running."""
    with container(image) as name:
        _mount_over_image_volumes(name, image, volumes)
        process = subprocess.Popen(
            _run_argv(name, argv, volumes, env), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        running = Running(process)
        try:
            yield running
        finally:
            if process.poll() is None:
                running.kill()
