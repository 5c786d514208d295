"""The build, beside pyproject.toml: compiles the per-line hot path with mypyc.

`ingestor/normalize/`, the framing, the `Line` type and the Convex encoding run once per input line or
op; compiled, a line costs 15-25% less CPU (docs/benchmarks.md). Everything else stays Python.

Compiled: a wheel (`pip install .`, the Docker image). Never an editable install (`pip install -e .`),
whose compiled modules would sit beside the sources and shadow every edit of them.
`INGESTOR_COMPILE=1` or `0` overrides either way.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

COMPILED = [
    "ingestor/lines.py",
    "ingestor/framing.py",
    "ingestor/normalize/__init__.py",
    "ingestor/normalize/app_server.py",
    "ingestor/normalize/detect.py",
    "ingestor/normalize/exec_json.py",
    "ingestor/normalize/facts.py",
    "ingestor/normalize/legacy.py",
    "ingestor/normalize/legacy_tools.py",
    "ingestor/normalize/raw.py",
    "ingestor/normalize/session_file.py",
    "ingestor/normalize/state.py",
    "ingestor/normalize/usage_facts.py",
    "ingestor/sinks/wire.py",
]


def _compile() -> bool:
    setting = os.environ.get("INGESTOR_COMPILE")
    if setting is not None:
        return setting == "1"
    # setuptools runs this file once per build step, the step's command in argv.
    return not any(command in sys.argv for command in ("editable_wheel", "develop"))


if _compile():
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3"))
else:
    setup()
