"""deploy/k8s-sidecar.yaml against the built image: what the Pod names is what the image has.

The example's ingestor container runs on the image (its args parsed by the daemon's own parser next to
the image's default command), on the port, volume paths and user the image declares; and its probes,
its args and the forwarder of its ConfigMap are run for real against that container.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path, PurePosixPath
from typing import Any, Final

import pytest
import yaml

from ingestor.cli.parser import build_parser
from tests.helpers.convex_e2e import REPO, app_server_conversations, call, http_get, log_events
from tests.helpers.convex_local import ConvexLocal
from tests.image.built_image import config, default_command, needs_image, run, started
from tests.image.sidecar import (
    APP_SERVER_STREAMS,
    DAEMON,
    Volumes,
    assert_metrics_port_free,
    image_uid_gid,
    wait_until_listening,
)

pytestmark = [needs_image, pytest.mark.e2e]

EXAMPLE: Final = REPO / "deploy" / "k8s-sidecar.yaml"


def documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(EXAMPLE.read_text())}


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = documents()["Pod"]["spec"]
    return spec


def ingestor_container() -> dict[str, Any]:
    [container] = [c for c in pod_spec()["initContainers"] if c["name"] == "ingestor"]
    return container


def worker_container() -> dict[str, Any]:
    [container] = pod_spec()["containers"]
    return container


def parsed(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def mount_path(container: dict[str, Any], volume: str) -> str:
    [path] = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return str(path)


def test_the_ingestor_runs_the_image_entrypoint_with_the_image_default_paths() -> None:
    container = ingestor_container()
    assert container["restartPolicy"] == "Always"  # a native sidecar
    assert "command" not in container, "the image's ENTRYPOINT must run: give args only"
    ours, image = parsed(container["args"]), parsed(default_command()[1:])
    assert config()["Entrypoint"] == ["ingestor"] and ours.command == image.command == "run"
    for option in ("sink", "unix", "state_dir", "metrics"):
        assert getattr(ours, option) == getattr(image, option), option


def test_ports_volumes_and_user_are_the_image_ones() -> None:
    container, image = ingestor_container(), config()
    args = parsed(container["args"])
    [port] = container["ports"]
    assert f"{port['containerPort']}/tcp" in image["ExposedPorts"]
    assert args.metrics.endswith(f":{port['containerPort']}")

    [state_dir] = image["Volumes"]
    assert mount_path(container, "ingestor-state") == str(args.state_dir) == state_dir
    [socket] = args.unix
    socket_dir = str(PurePosixPath(socket).parent)
    assert (
        mount_path(container, "ingest-socket")
        == mount_path(worker_container(), "ingest-socket")
        == socket_dir
    )
    assert socket in " ".join(worker_container()["args"])

    uid, gid = image_uid_gid()
    security = pod_spec()["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (uid, gid, gid)


def test_the_probes_name_what_the_daemon_serves() -> None:
    container = ingestor_container()
    [port] = container["ports"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": port["name"]}
    healthcheck = config()["Healthcheck"]["Test"]
    assert healthcheck[0] == "CMD" and f":{port['containerPort']}/healthz" in healthcheck[-1]


@pytest.fixture
def convex(convex_local: ConvexLocal) -> ConvexLocal:
    convex_local.reset()
    return convex_local


def test_the_example_container_runs_on_the_image(convex: ConvexLocal, tmp_path: Path) -> None:
    container = ingestor_container()
    args = parsed(container["args"])
    volumes = Volumes.make(tmp_path)
    key_dir = tmp_path / "convex-key"
    key_dir.mkdir()
    (key_dir / PurePosixPath(args.convex_key_file).name).write_text(f"{convex.admin_key}\n")
    mounts = {
        **volumes.mounts(),
        key_dir: mount_path(container, "convex-key"),
    }
    assert set(mounts.values()) == {m["mountPath"] for m in container["volumeMounts"]}
    startup_probe = container["startupProbe"]["exec"]["command"]
    socket_mount = {volumes.socket_dir: mount_path(container, "ingest-socket")}
    assert run(startup_probe, volumes=socket_mount).returncode != 0, "the startup probe passes with no socket"

    assert_metrics_port_free()
    env = {item["name"]: item["value"] for item in container["env"]} | {"CONVEX_URL": convex.url}
    # Kubernetes args replace the image's CMD and keep its ENTRYPOINT.
    with started([*config()["Entrypoint"], *container["args"]], volumes=mounts, env=env) as sidecar:
        [socket] = args.unix
        wait_until_listening(sidecar, volumes.socket_dir / PurePosixPath(socket).name)
        assert run(startup_probe, volumes=socket_mount).returncode == 0
        assert run(config()["Healthcheck"]["Test"][1:]).returncode == 0
        [port] = container["ports"]
        for probe in ("livenessProbe", "readinessProbe"):
            assert (
                http_get(f"http://127.0.0.1:{port['containerPort']}{container[probe]['httpGet']['path']}")[0]
                == 200
            )

        # The worker's side: the ConfigMap's forwarder copies a recorded app-server stream into the socket.
        forward = tmp_path / "forward.mjs"
        forward.write_text(documents()["ConfigMap"]["data"]["forward.mjs"])
        stream = APP_SERVER_STREAMS / "streamed_output.jsonl"
        with stream.open("rb") as stdin:
            subprocess.run(
                ["node", str(forward), str(volumes.socket_dir / PurePosixPath(socket).name)],
                stdin=stdin,
                check=True,
                timeout=60,
            )
        [conversation] = app_server_conversations(stream.read_bytes())
        deadline = time.monotonic() + 60
        query = {"conversationId": conversation}
        while call(convex.url, "query", "history:getConversation", query) is None:
            assert time.monotonic() < deadline, "the forwarded stream never reached Convex"
            time.sleep(0.2)
        status, stderr = sidecar.stop(DAEMON)
    assert status == 0, stderr.decode(errors="replace")[-4000:]
    [deployment] = [e for e in log_events(stderr) if e.get("event") == "convex deployment"]
    assert deployment["key_from"] == "--convex-key-file"  # the Secret's file, mounted where args say
