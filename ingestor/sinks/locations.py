"""Where the embedded store and the spool live when the command line does not say.

Per user, in each OS's convention (platformdirs): on Linux `$XDG_DATA_HOME/codex-ingestor/ingestor.db`
(`~/.local/share/...`) and `$XDG_STATE_HOME/codex-ingestor` (`~/.local/state/...`), so `show` finds
what `run` and `replay` stored from any directory.

Earlier versions defaulted to the current directory (`./ingestor.db`, and `./.ingestor-state` when
`XDG_STATE_HOME` was unset). Such a store or spool found in the current directory is still used, with
a notice naming the new default: data is never split between two stores without a word, and
undelivered operations in an old spool are still delivered.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import platformdirs

APP: Final = "codex-ingestor"
STORE_NAME: Final = "ingestor.db"
LEGACY_STORE: Final = Path(STORE_NAME)
LEGACY_STATE_DIR: Final = Path(".ingestor-state")


@dataclass(frozen=True, slots=True)
class DefaultLocation:
    path: Path
    legacy: bool
    """Found in the current directory, where earlier versions put it (not the per-user default)."""

    def moved_hint(self, default: Path) -> str:
        """For a legacy location: what to do to use the per-user default."""
        return (
            f"found in the current directory, where earlier versions kept it; the default is now "
            f"{default}: move it there (when no ingestor is using it) to use it from any directory"
        )


def user_store_path() -> Path:
    return platformdirs.user_data_path(APP) / STORE_NAME


def user_state_dir() -> Path:
    return platformdirs.user_state_path(APP)


def default_store() -> DefaultLocation:
    """The embedded store to use without `--sink`: `./ingestor.db` if there is one, else per user."""
    if LEGACY_STORE.is_file():
        return DefaultLocation(LEGACY_STORE, legacy=True)
    return DefaultLocation(user_store_path(), legacy=False)


def default_state_dir(env: Mapping[str, str] = os.environ) -> DefaultLocation:
    """The spool's directory without `--state-dir`: `./.ingestor-state` if earlier versions would
    have used it (no `XDG_STATE_HOME`) and it is there, else per user."""
    if not env.get("XDG_STATE_HOME", "").strip() and LEGACY_STATE_DIR.is_dir():
        return DefaultLocation(LEGACY_STATE_DIR, legacy=True)
    return DefaultLocation(user_state_dir(), legacy=False)
