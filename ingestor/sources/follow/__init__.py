"""Following Codex session files as they are written (`run --follow`), and replaying files with
checkpoints (`replay --state-dir`).

Every session file (`rollout-*.jsonl`, or `rollout-*.jsonl.zst`) under the followed directories, and
every file named directly, is one stream (`file:PATH`) while it has something to read. Changes are
learned from file-system notifications (watchfiles: inotify, FSEvents, kqueue), and from a rescan every
`poll` seconds for file systems that do not notify (network mounts). Where each file stands is in the
checkpoint table (`ingestor.checkpoints`): a file unchanged since it was finished is not opened again;
one that grew is read from its start, its stored lines only rebuilding the normalizer's state
(`normalizer.py`).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskGroup, TaskStatus

from ingestor.checkpoints import Checkpoint, Checkpoints, fingerprint
from ingestor.errors import SourceConfigError
from ingestor.logging import get_logger
from ingestor.metrics import METRICS
from ingestor.sources import StreamHandler
from ingestor.sources.follow.normalizer import FollowedNormalizer, NormalizerFactory, StreamNormalizer
from ingestor.sources.follow.tail import ZSTD_SUFFIX, Ending, Tail, read_compressed, read_growing, read_head

log = get_logger("ingestor.follow")

SESSION_PREFIX: Final = "rollout-"
SESSION_SUFFIXES: Final = (".jsonl", ".jsonl" + ZSTD_SUFFIX)
DEFAULT_IDLE: Final = 600.0
"""A followed file quiet this long (seconds) is finished: its end-of-stream facts are stored (the
conversation's last activity; a Codex 0.63 session's last inferred turn closed). Codex keeps writing
a session's file while the session is open, even between turns, so this is longer than a pause."""
DEFAULT_POLL: Final = 30.0
"""Seconds between rescans: what a file system that sends no notifications waits at most."""
WHERE_NAMED_FILES: Final = 5
"""Files named in the log line that says what is followed (the rest counted)."""
WATCH_STEP_MS: Final = 20
WATCH_DEBOUNCE_MS: Final = 50
"""Notifications are handed over after 20 ms without more, or every 50 ms while files keep changing
(watchfiles' default 1.6 s cap would be the latency of a busy machine)."""


def codex_sessions(env: Mapping[str, str]) -> Path:
    """`$CODEX_HOME/sessions`, `CODEX_HOME` defaulting to `~/.codex`."""
    home = env.get("CODEX_HOME") or os.path.join(os.path.expanduser("~"), ".codex")
    return Path(home) / "sessions"


def is_session_file(name: str) -> bool:
    return name.startswith(SESSION_PREFIX) and name.endswith(SESSION_SUFFIXES)


def stream_name(path: str) -> str:
    return f"file:{path}"


@dataclass(frozen=True, slots=True)
class FollowConfig:
    idle: float = DEFAULT_IDLE
    poll: float = DEFAULT_POLL
    once: bool = False
    """Replay: read every file to its current end, finish it, and end (no watching)."""
    force_polling: bool | None = None
    """watchfiles' polling instead of notifications (None: its own choice, also WATCHFILES_FORCE_POLLING)."""


class FollowSource:
    """`Source` of followed files. `normalizer_factory()` wraps the pipeline's: streams of this source
    need their `FollowedNormalizer`."""

    def __init__(
        self,
        roots: Sequence[Path],
        checkpoints: Checkpoints,
        config: FollowConfig | None = None,
        *,
        files: Sequence[str] = (),
    ) -> None:
        """`roots`: directories whose session files are followed (recursively); `files`: files followed
        whatever their names (plain strings: a replay names every file of an archive)."""
        self._config = config or FollowConfig()
        if not self._config.once:  # a replay's files were listed a moment ago (expand_paths)
            named: list[str | Path] = [*roots, *files]
            missing = [str(p) for p in named if not os.path.exists(p)]
            if missing:
                raise SourceConfigError(f"no such file or directory to follow: {', '.join(missing)}")
        self._roots = [p.absolute() for p in roots]
        self._files = {os.path.abspath(p) for p in files}
        self._checkpoints = checkpoints
        self._tails: dict[str, Tail | None] = {}
        """The stream of each file being read, by path (None while it opens)."""
        self._handle: StreamHandler | None = None
        self._tg: TaskGroup | None = None
        self.files_read = 0
        """Files a replay (`once`) opened: new, or changed since their checkpoint."""

    def normalizer_factory(self, inner: NormalizerFactory) -> NormalizerFactory:
        tails = self._tails

        def make(source: str) -> StreamNormalizer:
            normalizer = inner(source)
            tail = tails.get(source[len("file:") :]) if source.startswith("file:") else None
            return normalizer if tail is None else FollowedNormalizer(normalizer, tail)

        return make

    async def serve(
        self, handle: StreamHandler, *, task_status: TaskStatus[str] = TASK_STATUS_IGNORED
    ) -> None:
        self._handle = handle
        config = self._config
        named = sorted(self._files)
        if len(named) > WHERE_NAMED_FILES:  # a replay of a whole archive: not every path in the log
            named = [*named[:WHERE_NAMED_FILES], f"and {len(named) - WHERE_NAMED_FILES:,} more files"]
        where = ", ".join(str(p) for p in [*self._roots, *named])
        if config.once:
            task_status.started(f"files with checkpoints: {where}")
            # One after another, in path order, as a replay reads them; an unchanged file costs a stat.
            for path in sorted(self._scan()):
                if self._worth_opening(path):
                    self.files_read += 1
                    await self._follow(path)
            return
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for path in sorted(self._scan()):
                self._touch(path)
            tg.start_soon(self._watch)
            tg.start_soon(self._rescan)
            task_status.started(f"follow: {where}")

    def _scan(self) -> set[str]:
        """Every file to follow now, and the checkpoints of those gone noted (a replay reads each file
        once and forgets none: it only needs the paths)."""
        if self._config.once:
            found = set(self._files)
        else:
            found = {path for path in self._files if os.path.exists(path)}
        for root in self._roots:
            found.update(_session_files(root))
        if not self._config.once:
            self._checkpoints.forget_missing(found, self._watches)
        return found

    def _watches(self, path: str) -> bool:
        return path in self._files or any(path.startswith(f"{root}{os.sep}") for root in self._roots)

    def _touch(self, path: str) -> None:
        """`path` may have changed: wake its stream, or start one if it has something to read."""
        tail = self._tails.get(path)
        if tail is not None:
            tail.wake.set()
        elif path not in self._tails and self._tg is not None and self._worth_opening(path):
            self._tails[path] = None  # one stream per file, even before it opens
            self._tg.start_soon(self._follow, path)

    def _worth_opening(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        return not _done(self._checkpoints.by_path.get(path), st)

    async def _follow(self, path: str) -> None:
        """Read `path` in streams (a new one when it is truncated or replaced) until it is done with."""
        assert self._handle is not None
        try:
            while True:
                opened = self._open(path)
                if opened is None:
                    return
                tail, fd = opened
                self._tails[path] = tail
                try:
                    config = self._config
                    if tail.compressed:
                        chunks = read_compressed(tail, fd)
                    else:
                        chunks = read_growing(tail, fd, idle_ns=int(config.idle * 1e9), once=config.once)
                    await self._handle(stream_name(path), chunks)
                finally:
                    os.close(fd)
                if tail.ending is Ending.REOPEN:
                    log.info("followed file truncated or replaced: reading it from its start", path=path)
                elif tail.ending is Ending.STOPPED or not _changed_since(tail, path):
                    return
                # else written to while it was being finished: a notification may have been missed.
        finally:
            self._tails.pop(path, None)

    def _open(self, path: str) -> tuple[Tail, int] | None:
        """`path` opened, with where to resume (None: gone, or nothing new)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        checkpoint = self._checkpoints.by_path.get(path)
        if _done(checkpoint, st):
            os.close(fd)
            return None
        head = read_head(path, fd)
        if checkpoint is None and path.endswith(ZSTD_SUFFIX):
            # Compressed after it was finished: the plain file's session, resumed where it stood.
            plain = self._checkpoints.by_path.get(path[: -len(ZSTD_SUFFIX)])
            checkpoint = plain if plain is not None and _same_head(plain, head) else None
        elif checkpoint is not None and not _same_file(checkpoint, st, head, path):
            checkpoint = None
        tail = Tail(path, st.st_dev, st.st_ino, 0, size=st.st_size, mtime_ns=st.st_mtime_ns)
        if checkpoint is not None:
            tail.skip_lines, tail.finished_before = checkpoint.lines, checkpoint.finished
        return tail, fd

    async def _watch(self) -> None:
        import watchfiles  # loaded by `run --follow` only: every other command starts without it

        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            # awatch's thread looks at its stop event between waits; cancellation alone would keep
            # shutdown waiting for its next timeout.
            tg.start_soon(_set_when_cancelled, stop)
            watched: list[Path | str] = [*self._roots, *self._files]
            try:
                async for changes in watchfiles.awatch(
                    *watched,
                    watch_filter=None,
                    debounce=WATCH_DEBOUNCE_MS,
                    step=WATCH_STEP_MS,
                    stop_event=stop,
                    force_polling=self._config.force_polling,
                ):
                    for _, changed in changes:
                        self._changed(changed)
            except (OSError, RuntimeError) as error:
                # The inotify watch limit reached, a followed directory removed...: the rescans go on.
                log.warning(
                    "file-system notifications unavailable: changes are seen at the next rescan",
                    error=str(error),
                    poll_seconds=self._config.poll,
                )
            tg.cancel_scope.cancel()

    def _changed(self, path: str) -> None:
        name = os.path.basename(path)
        if name.startswith("."):
            return
        if path in self._files or is_session_file(name):
            self._touch(path)
        elif os.path.isdir(path):
            # A new directory (tomorrow's date): files may have been written before it was watched.
            for found in _session_files(Path(path)):
                self._touch(found)

    async def _rescan(self) -> None:
        # Soon after start (what changed while the watcher started), then every `poll` seconds.
        delay = min(1.0, self._config.poll)
        while True:
            await anyio.sleep(delay)
            delay = self._config.poll
            for path in sorted(self._scan()):
                self._touch(path)
            self.update_metrics()

    def update_metrics(self) -> None:
        """Files followed, bytes written to them not read yet, and how long the oldest of those has
        waited (since its file was last read to its end)."""
        tails = [tail for tail in self._tails.values() if tail is not None]
        behind = 0
        caught_up = []
        for tail in tails:
            try:
                unread = os.stat(tail.path).st_size - tail.position if not tail.compressed else 0
            except OSError:
                continue
            if unread > 0:
                behind += unread
                caught_up.append(tail.caught_up_ns)
        METRICS.files_followed.set(len(tails))
        METRICS.follow_bytes_behind.set(behind)
        oldest = (time.time_ns() - min(caught_up)) / 1e9 if caught_up else 0.0
        METRICS.follow_oldest_unread_age.set(max(0.0, oldest))


def _changed_since(tail: Tail, path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    now = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return now != (tail.device, tail.inode, tail.size, tail.mtime_ns)


async def _set_when_cancelled(event: anyio.Event) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        event.set()


def _session_files(root: Path) -> Iterator[str]:
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if is_session_file(name):
                yield os.path.join(directory, name)


def _done(checkpoint: Checkpoint | None, st: os.stat_result) -> bool:
    """Finished, and not touched since: nothing to read (not even its first bytes)."""
    return (
        checkpoint is not None
        and checkpoint.finished
        and (checkpoint.device, checkpoint.inode, checkpoint.size, checkpoint.mtime_ns)
        == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    )


def _same_head(checkpoint: Checkpoint, head: bytes) -> bool:
    return len(head) >= checkpoint.head_len and fingerprint(head[: checkpoint.head_len]) == checkpoint.head


def _same_file(checkpoint: Checkpoint, st: os.stat_result, head: bytes, path: str) -> bool:
    """The file the checkpoint is about, grown or not (not truncated, not another file)."""
    if (checkpoint.device, checkpoint.inode) != (st.st_dev, st.st_ino):
        return False
    if not path.endswith(ZSTD_SUFFIX) and st.st_size < checkpoint.offset:
        return False
    return _same_head(checkpoint, head)
