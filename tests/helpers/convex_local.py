"""The local Convex stand-in (testing/convex-local) as a test resource.

`convex_local_server()` starts `npm run --silent convex:local -- --port 0` (our real `convex/`
functions behind the Convex HTTP API, in memory), waits for the line naming its URL, yields a
`ConvexLocal` and stops it with SIGTERM. Tests needing it are skipped when node_modules is absent.
conftest.py turns it into the session fixture `convex_local`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from ingestor.sinks.convex.client import ADMIN_IDENTITY, admin_authorization

REPO: Final = Path(__file__).resolve().parents[2]
ADMIN_KEY: Final = "convex-local-test-admin-key"
# Identities a test can call as (`identity_headers`), allowed by the stand-in's Convex environment.
READER: Final = {"subject": "user-42", "issuer": "https://auth.example.test"}
WORKER: Final = {"subject": "worker-7", "issuer": "https://auth.example.test"}
STRANGER: Final = {"subject": "mallory", "issuer": "https://auth.example.test"}
_URL_LINE: Final = re.compile(r"http://127\.0\.0\.1:\d+")


@dataclass
class ConvexLocal:
    """A running stand-in: its URL, admin key, and its test-only `/_test/*` controls."""

    url: str
    admin_key: str | None
    process: subprocess.Popen[str]
    output: collections.deque[str]

    @property
    def admin_headers(self) -> dict[str, str]:
        """The admin key acting as the admin identity, as `ingestor show` calls (it may call every
        function, public ones included)."""
        return (
            {"Authorization": admin_authorization(self.admin_key, ADMIN_IDENTITY)} if self.admin_key else {}
        )

    @staticmethod
    def identity_headers(identity: dict[str, str]) -> dict[str, str]:
        """A caller signed in as `identity` (the stand-in's test-only header, in place of a JWT)."""
        return {"Convex-Test-Identity": json.dumps(identity)}

    def _control(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"{self.url}/_test/{route}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def reset(self, *, data: bool = True) -> None:
        """No faults, zero stats and, with `data`, an empty database."""
        self._control("POST", "reset", {"data": data})

    def faults(self, **faults: int) -> dict[str, int]:
        """e.g. `faults(failNext=2, status=503)`, `faults(delayMs=200)`, `faults(dropAfterCommitNext=1)`."""
        result: dict[str, int] = self._control("POST", "faults", dict(faults))
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", "stats")
        return result

    def functions(self) -> dict[str, dict[str, Any]]:
        """Every callable function: `module:name` -> `{"kind": ..., "internal": ...}`."""
        result: dict[str, dict[str, Any]] = self._control("GET", "functions")
        return result

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> int:
        """Signals the server and returns its exit code (killing its process group if it hangs)."""
        if self.process.poll() is None:
            # npm runs the server with `exec`: the signal reaches it (through tsx); npm exits with its code.
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout)


def _skip_without_node_modules() -> None:
    if not (REPO / "node_modules" / "convex-test").is_dir():
        pytest.skip(
            "node_modules missing (the local Convex stand-in needs it): run `npm ci` at the repo root"
        )


def start(admin_key: str | None = ADMIN_KEY, startup_timeout: float = 60) -> ConvexLocal:
    """Starts a stand-in on a free port; with `admin_key=None` internal functions are open to all."""
    _skip_without_node_modules()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEX_")}
    if admin_key is not None:
        env["CONVEX_ADMIN_KEY"] = admin_key
    # convex/lib/access.ts reads who is allowed from the deployment's environment.
    env["INGESTOR_READER_SUBJECTS"] = READER["subject"]
    env["INGESTOR_WORKER_SUBJECTS"] = WORKER["subject"]
    process = subprocess.Popen(
        ["npm", "run", "--silent", "convex:local", "--", "--port", "0"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so a hung server can be killed whole
    )
    output: collections.deque[str] = collections.deque(maxlen=200)
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        # Reads for the server's whole life, so a chatty server never blocks on a full pipe.
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    server = ConvexLocal(url="", admin_key=admin_key, process=process, output=output)
    deadline = time.monotonic() + startup_timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                seen = "\n".join(output)
                raise RuntimeError(f"convex:local printed no URL in {startup_timeout} s:\n{seen}") from None
            if line is None:
                raise RuntimeError("convex:local exited before serving:\n" + "\n".join(output))
            match = _URL_LINE.search(line)
            if match:
                server.url = match.group(0)
                return server
    except BaseException:
        server.stop()
        raise


@contextlib.contextmanager
def convex_local_server(admin_key: str | None = ADMIN_KEY) -> Iterator[ConvexLocal]:
    server = start(admin_key)
    try:
        yield server
    finally:
        server.stop()
