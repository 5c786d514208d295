"""The built image itself: its user, the compiled build, `--version`, and what its final stage adds."""

from __future__ import annotations

import ast
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from tests.helpers.convex_e2e import REPO
from tests.image.built_image import BASE, IMAGE, config, mounted, needs_image, run

pytestmark = needs_image

VENV: Final = "/opt/ingestor/"
# What the final stage may add besides the venv: the account useradd makes (with its backups), and
# /etc/hosts, which buildah writes for every RUN step. Directories are not listed, files only.
ACCOUNT_FILES: Final = frozenset(
    f"/etc/{name}{suffix}" for name in ("passwd", "group", "shadow", "gshadow") for suffix in ("", "-")
) | {"/etc/hosts"}
# Measured: 44 MiB (the daemon, its dependencies, the compiled modules; zstandard, for compressed
# session files, is 24 MiB of it), before watchfiles (`run --follow`) added 1.3 MiB. A bound that catches
# build leftovers, not a target.
MAX_ADDED_BYTES: Final = 56 * 1024 * 1024


def test_it_runs_as_uid_10001_not_root() -> None:
    assert config()["User"] == "10001:10001"
    result = run(["python", "-c", "import os; print(os.getuid(), os.getgid(), os.geteuid())"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10001", "10001", "10001"]


def compiled_modules() -> list[str]:
    """The modules setup.py compiles with mypyc (its COMPILED list), as import names."""
    tree = ast.parse((REPO / "setup.py").read_text())
    [paths] = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMPILED" for t in node.targets)
    ]
    return [path.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for path in paths]


def test_the_compiled_modules_are_the_ones_imported() -> None:
    modules = compiled_modules()
    assert "ingestor.normalize" in modules and len(modules) > 5
    code = "import importlib, sys; [print(importlib.import_module(m).__file__) for m in sys.argv[1:]]"
    result = run(["python", "-c", code, *modules])
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    assert len(files) == len(modules)
    for module, file in zip(modules, files, strict=True):
        assert file.startswith(VENV) and file.endswith(".so"), (module, file)  # an extension, not .py


def test_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = run(["ingestor", "--version"])
    assert (result.returncode, result.stdout) == (0, f"ingestor {version}\n"), result.stderr


def _files(root: Path) -> Iterator[tuple[str, int, float]]:
    """Every non-directory in a root file system: path inside it, size, modification time."""
    for directory, subdirectories, names in os.walk(root):
        for name in names + [d for d in subdirectories if os.path.islink(os.path.join(directory, d))]:
            path = os.path.join(directory, name)
            stat = os.lstat(path)
            yield path.removeprefix(str(root)), stat.st_size, stat.st_mtime


def test_the_final_stage_adds_the_daemon_and_nothing_to_build_it() -> None:
    with mounted(BASE) as base_root:
        base = {path: (size, mtime) for path, size, mtime in _files(base_root)}
    with mounted(IMAGE) as image_root:
        added = {path: size for path, size, mtime in _files(image_root) if base.get(path) != (size, mtime)}

    assert {path for path in added if not path.startswith(VENV)} <= ACCOUNT_FILES
    venv = [path.removeprefix(VENV) for path in added if path.startswith(VENV)]
    assert "bin/ingestor" in venv
    build_leftovers = [
        path
        for path in venv
        if path.endswith((".c", ".h", ".o"))  # mypyc's C sources, headers, objects
        or "/.cache/" in path  # a pip cache
        or path.startswith(("lib/python3.11/site-packages/pip", "lib/python3.11/site-packages/setuptools"))
        or Path(path).name in {"gcc", "cc", "pip", "pip3"}
    ]
    assert build_leftovers == []
    assert sum(added.values()) < MAX_ADDED_BYTES


def test_no_compiler_in_the_image() -> None:
    result = run(
        ["python", "-c", "import shutil; print([c for c in ('gcc', 'cc', 'c99') if shutil.which(c)])"]
    )
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr


@pytest.mark.parametrize("path", ["/var/lib/ingestor", "/run/ingestor"])
def test_its_directories_belong_to_its_user(path: str) -> None:
    result = run(["python", "-c", f"import os; s = os.stat({path!r}); print(s.st_uid, s.st_gid)"])
    assert (result.returncode, result.stdout) == (0, "10001 10001\n"), result.stderr
