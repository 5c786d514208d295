"""Where the pinned Codex CLIs live, for the recorder and for end-to-end tests.

Both versions are installed side by side by ``npm ci --prefix testing/codex`` under npm aliases
(the 0.169 platform binary resolves through ``@openai/codex-linux-x64``; 0.63 ships its binaries
in its own ``vendor/``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["CODEX_DIR", "NPM_ALIASES", "CodexNotInstalled", "codex_argv"]

CODEX_DIR = Path(__file__).resolve().parent

# Codex version -> npm alias in testing/codex/package.json.
NPM_ALIASES: dict[str, str] = {"0.169.0": "codex-current", "0.63.0": "codex-legacy"}


class CodexNotInstalled(RuntimeError):
    pass


def codex_argv(version: str) -> list[str]:
    """The command prefix running Codex ``version`` through its npm launcher, as users do
    (the launcher sets the env the native binary expects and forwards signals)."""
    node = shutil.which("node")
    if node is None:
        raise CodexNotInstalled("node is not on PATH")
    entry = CODEX_DIR / "node_modules" / NPM_ALIASES[version] / "bin" / "codex.js"
    if not entry.exists():
        raise CodexNotInstalled(f"{entry} is missing: run `npm ci --prefix testing/codex`")
    return [node, str(entry)]
