"""The follow examples in deploy/ name options the command line has (they are not run here: no
systemd, launchd or Kubernetes on the test machines)."""

from __future__ import annotations

import plistlib
import shlex
from pathlib import Path
from typing import Final

import yaml

from ingestor.cli.parser import build_parser

DEPLOY: Final = Path(__file__).resolve().parents[2] / "deploy"


def test_the_systemd_unit_runs_a_valid_follow_command() -> None:
    unit = (DEPLOY / "codex-ingestor.service").read_text()
    [exec_start] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart=").replace("%h", "/home/you"))
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.follow) == ("run", [])
    assert args.state_dir == Path("/home/you/.local/state/codex-ingestor")


def test_the_launchd_agent_runs_a_valid_follow_command() -> None:
    agent = plistlib.loads((DEPLOY / "dev.codex-ingestor.plist").read_bytes())
    args = build_parser().parse_args(agent["ProgramArguments"][1:])
    assert (args.command, args.follow) == ("run", [])


def test_the_kubernetes_example_follows_the_shared_codex_home() -> None:
    pod = next(d for d in yaml.safe_load_all((DEPLOY / "k8s-follow.yaml").read_text()) if d["kind"] == "Pod")
    [ingestor] = pod["spec"]["initContainers"]
    [worker] = pod["spec"]["containers"]
    args = build_parser().parse_args(ingestor["args"])
    assert (args.command, args.follow) == ("run", [])
    home = {e["name"]: e["value"] for e in ingestor["env"]}["CODEX_HOME"]
    assert home == {e["name"]: e["value"] for e in worker["env"]}["CODEX_HOME"]
    mounts = {m["name"]: m["mountPath"] for c in (ingestor, worker) for m in c["volumeMounts"]}
    assert mounts["codex-home"] == home
