"""The build, beside pyproject.toml: compiles the per-line hot path with mypyc.

`ingestor/normalize/`, the framing, the `Line` type and the Convex encoding run once per input line or
op; compiled, a line costs 15-25% less CPU (docs/benchmarks.md). Everything else stays Python. Set
`INGESTOR_COMPILE=0` to build pure Python: scripts/bootstrap does, for the editable development
install, where a compiled module next to its source would shadow every edit of that source.
"""

from __future__ import annotations

import os

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

if os.environ.get("INGESTOR_COMPILE", "1") == "1":
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3"))
else:
    setup()
