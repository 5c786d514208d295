"""`--sink` values: parsing, the default choice, and opening a sink or a history reader.

The seam for sinks: `open_sink()` and `open_history()` are the only places that know every kind.
Each sink's package is imported only when that sink is chosen, so its dependencies load only then.
A sink's settings beyond its path are a typed options object the CLI builds (Convex: `ConvexOptions`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Literal

from ingestor.errors import SinkError
from ingestor.sinks.base import HistoryReader, Sink
from ingestor.sinks.convex.deployment import ConvexOptions
from ingestor.sinks.locations import default_store, user_store_path

SinkKind = Literal["sqlite", "convex", "jsonl", "null"]

CONVEX_ENV_VARS: Final = ("CONVEX_URL", "CONVEX_DEPLOYMENT", "CONVEX_SELF_HOSTED_URL", "CONVEX_SITE_ORIGIN")
SINK_SYNTAX: Final = "sqlite:PATH, convex, jsonl:PATH, jsonl:- or null"


@dataclass(frozen=True, slots=True)
class SinkSpec:
    kind: SinkKind
    target: str = ""
    """The path for sqlite and jsonl (`-` = stdout for jsonl)."""
    create_parent: bool = field(default=False, compare=False)
    """sqlite: make the store's directory on first write (the per-user default's, not a --sink's)."""

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind


def parse_sink(value: str) -> SinkSpec:
    kind, _, target = value.partition(":")
    if kind in ("convex", "null") and not target:
        return SinkSpec(kind)  # type: ignore[arg-type]  # narrowed by the test above
    if kind == "sqlite" and target:
        return SinkSpec("sqlite", target)
    if kind == "jsonl" and target:
        return SinkSpec("jsonl", target)
    raise SinkError(f"invalid --sink {value!r}: expected {SINK_SYNTAX}")


def resolve_sink(
    value: str | None, env: Mapping[str, str], *, convex_url: str | None = None, reading: bool = False
) -> tuple[SinkSpec, str | None]:
    """The sink to use and, when the embedded store was chosen by default, the notice saying where
    it is (`reading` from it for `show`, else storing in it). `--convex-url` (`convex_url`) alone
    selects Convex; beside another `--sink` it is a mistake, not something to ignore."""
    if value is not None:
        spec = parse_sink(value)
        if convex_url is not None and spec.kind != "convex":
            raise SinkError(f"--convex-url applies to --sink convex only, not to --sink {spec}")
        return spec, None
    if convex_url is not None or any(env.get(name) for name in CONVEX_ENV_VARS):
        return SinkSpec("convex"), None
    store = default_store()
    verb = "reading from" if reading else "storing in"
    why = (
        store.moved_hint(user_store_path())
        if store.legacy
        else f"the embedded store: no --sink, no --convex-url, none of {', '.join(CONVEX_ENV_VARS)} set"
    )
    spec = SinkSpec("sqlite", str(store.path), create_parent=not store.legacy)
    return spec, f"ingestor: {verb} {store.path} ({why})"


@asynccontextmanager
async def open_sink(
    spec: SinkSpec, env: Mapping[str, str], convex: ConvexOptions | None = None
) -> AsyncIterator[Sink]:
    """The sink, ready to write; leaving the context flushes and closes it."""
    # Imports are deferred so that each sink's dependencies load only when that sink is used.
    opened: AbstractAsyncContextManager[Sink]
    if spec.kind == "sqlite":
        from ingestor.sinks.sqlite.sink import open_sqlite_sink

        opened = open_sqlite_sink(spec.target, create_parent=spec.create_parent)
    elif spec.kind == "jsonl":
        from ingestor.sinks.jsonl import open_jsonl_sink

        opened = open_jsonl_sink(spec.target)
    elif spec.kind == "null":
        from ingestor.sinks.null import open_null_sink

        opened = open_null_sink()
    else:
        from ingestor.sinks.convex.factory import open_sink_from_env

        opened = open_sink_from_env(env, convex or ConvexOptions())
    async with opened as sink:
        yield sink


@asynccontextmanager
async def open_history(
    spec: SinkSpec, env: Mapping[str, str], convex: ConvexOptions | None = None
) -> AsyncIterator[HistoryReader]:
    """The read side of a sink, for `ingestor show`."""
    opened: AbstractAsyncContextManager[HistoryReader]
    if spec.kind == "sqlite":
        from ingestor.sinks.sqlite.history import open_sqlite_history

        opened = open_sqlite_history(spec.target)
    elif spec.kind == "convex":
        from ingestor.sinks.convex.factory import open_history_from_env

        opened = open_history_from_env(env, convex or ConvexOptions())
    else:
        raise SinkError(f"--sink {spec} cannot be read back: use sqlite:PATH or convex")
    async with opened as reader:
        yield reader
