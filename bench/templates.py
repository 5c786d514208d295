"""Real line shapes from the recorded fixtures, used as the base of every generated line.

The generator builds each line from what docs say (see docs/notes/codex-streams.md); when a
recorded app-server line of the same kind exists in fixtures/, the generated fields are laid over a
copy of it, so the fields the real CLI sends and the generator does not know about are kept too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

# Fields whose recorded value would be stale or huge in a generated line: never copied from a template.
_DROP = frozenset(
    {"items", "delta", "aggregatedOutput", "text", "stdout", "stderr", "chunk", "formatted_output"}
)


def _overlay(base: dict[str, Any] | None, top: dict[str, Any]) -> dict[str, Any]:
    if not base:
        return top
    out = {k: v for k, v in base.items() if k not in _DROP}
    for k, v in top.items():
        old = out.get(k)
        if isinstance(old, dict) and isinstance(v, dict) and old.get("type") == v.get("type"):
            out[k] = {**{kk: vv for kk, vv in old.items() if kk not in _DROP}, **v}
        else:
            out[k] = v
    return out


def app_server_files(root: Path = FIXTURES) -> list[Path]:
    """The recorded `codex app-server` streams (session files and `exec --json` have no `method`)."""
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.rglob("*.jsonl") if "app-server" in p.parts and "node_modules" not in p.parts
    )


class Templates:
    """Samples of recorded lines: params by method, items by type, legacy messages by type.

    `flavor` is `legacy` for streams that carry `codex/event/*` (Codex 0.63), else `v2`.
    """

    def __init__(self) -> None:
        self.by_method: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.legacy: dict[str, dict[str, Any]] = {}
        self.sources: list[str] = []

    @classmethod
    def empty(cls) -> Templates:
        return cls()

    @classmethod
    def load(cls, root: Path = FIXTURES) -> Templates:
        tpl = cls()
        if not root.is_dir():
            return tpl
        for path in app_server_files(root):
            try:
                lines = path.read_bytes().splitlines()
            except OSError:  # fixtures being re-recorded right now
                continue
            flavor = "legacy" if any(b'"codex/event/' in raw for raw in lines) else "v2"
            used = False
            for raw in lines:
                used |= tpl._add(flavor, raw)
            if used:
                tpl.sources.append(str(path.relative_to(root.parent)))
        return tpl

    def _add(self, flavor: str, raw: bytes) -> bool:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(obj, dict):
            return False
        method, params = obj.get("method"), obj.get("params")
        if not isinstance(method, str) or not isinstance(params, dict):
            return False
        if method.startswith("codex/event/"):
            msg = params.get("msg")
            if isinstance(msg, dict) and isinstance(msg.get("type"), str):
                self.legacy.setdefault(msg["type"], msg)
            return True
        item = params.get("item")
        sub = ""
        if isinstance(item, dict) and isinstance(item.get("type"), str):
            sub = item["type"]
            self.items.setdefault((flavor, sub), item)
        self.by_method.setdefault((flavor, method, sub), params)
        return True

    def params(self, flavor: str, method: str, sub: str, params: dict[str, Any]) -> dict[str, Any]:
        return _overlay(self.by_method.get((flavor, method, sub)), params)

    def item(self, flavor: str, item_type: str, item: dict[str, Any]) -> dict[str, Any]:
        return _overlay(self.items.get((flavor, item_type)), item)

    def legacy_msg(self, msg_type: str, msg: dict[str, Any]) -> dict[str, Any]:
        return _overlay(self.legacy.get(msg_type), msg)

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.sources,
            "methods": sorted({m for _, m, _ in self.by_method}),
            "item_types": sorted({t for _, t in self.items}),
            "legacy_types": sorted(self.legacy),
        }
