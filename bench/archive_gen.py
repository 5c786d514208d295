"""A sessions archive: thousands of Codex session files, as `~/.codex/sessions` holds them after a year.

Every file is a copy of one real recorded session file from `fixtures/` (both formats: 0.169, with
its large `session_meta` and `turn_context` lines, and 0.63), chosen by a seeded random draw, made a
session of its own: every UUID (thread, turns, windows) and every `call_*` id is replaced by one
derived from the file's number, so no two files share a row, and every ISO timestamp is moved by
the same amount, so the sessions spread over a year (one per `sessions/YYYY/MM/DD/` day directory,
as Codex lays them out). Lines keep their shape and size; nothing else changes.

Also writes the same lines, in the order `replay DIR` reads them (paths sorted), as one file: the
archive's cost with the per-file overhead taken out.

    python -m bench.archive_gen --files 2000 --seed 1 --out DIR     # DIR/sessions/..., DIR/all.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

from bench.templates import FIXTURES

VERSION_WEIGHTS = {"codex-0.169.0": 3, "codex-0.63.0": 1}
"""How often each format is drawn: most of an archive is written by the current CLI."""
YEAR_START = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
YEAR_MS = 365 * 86_400_000

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CALL_ID = re.compile(rb"call_[A-Za-z0-9_]+")
_ISO_TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_FILE_TIME = re.compile(r"rollout-(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d)-")


def session_files(root: Path = FIXTURES) -> list[tuple[Path, int]]:
    """The recorded session files with their draw weight, in a fixed order."""
    found = []
    for version, weight in VERSION_WEIGHTS.items():
        found += [(p, weight) for p in sorted((root / version / "sessions").rglob("rollout-*.jsonl"))]
    return found


def _derived_uuid(tag: bytes, original: bytes, shift_ms: int) -> bytes:
    """A new id for `original`: random bits from the tag, and for a UUIDv7 (Codex's thread and turn
    ids), its time moved with the session, so ids stay in time order as real ones are (which decides
    where index inserts land)."""
    h = hashlib.blake2b(tag + original, digest_size=16).hexdigest()
    head = f"{h[:8]}-{h[8:12]}"
    if original[14:15] == b"7":
        ms = int(original[:8] + original[9:13], 16) + shift_ms
        head = f"{ms:012x}"[:8] + "-" + f"{ms:012x}"[8:]
    return f"{head}-7{h[13:16]}-8{h[17:20]}-{h[20:32]}".encode()


def _derived_call(tag: bytes, original: bytes) -> bytes:
    return b"call_" + hashlib.blake2b(tag + original, digest_size=12).hexdigest().encode()


def _start_of(path: Path) -> dt.datetime:
    found = _FILE_TIME.search(path.name)
    if found is None:
        raise ValueError(f"{path}: not a rollout file name")
    return dt.datetime.strptime(found[1], "%Y-%m-%dT%H-%M-%S").replace(tzinfo=dt.UTC)


def _shifter(delta: dt.timedelta) -> Callable[[re.Match[bytes]], bytes]:
    def shift(m: re.Match[bytes]) -> bytes:
        when = dt.datetime.strptime(m[0].decode(), "%Y-%m-%dT%H:%M:%S.%fZ") + delta
        return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3].encode() + b"Z"

    return shift


def make_session(source: Path, number: int, seed: int, start: dt.datetime) -> tuple[str, bytes]:
    """Session `number` of the archive, copied from `source`: its path under `sessions/` and its bytes."""
    tag = f"{seed}/{number}/".encode()
    shift = start - _start_of(source)
    shift_ms = shift // dt.timedelta(milliseconds=1)
    uuids: dict[bytes, bytes] = {}
    data = source.read_bytes()
    data = _UUID.sub(lambda m: uuids.setdefault(m[0], _derived_uuid(tag, m[0], shift_ms)), data)
    data = _CALL_ID.sub(lambda m: _derived_call(tag, m[0]), data)
    data = _ISO_TIME.sub(_shifter(shift), data)
    found = _UUID.search(source.name.encode())
    thread = uuids.get(found[0], b"") if found else b""
    name = f"rollout-{start:%Y-%m-%dT%H-%M-%S}-{thread.decode()}.jsonl"
    return f"{start:%Y/%m/%d}/{name}", data


def write(out: Path, files: int, seed: int, root: Path = FIXTURES) -> tuple[int, int]:
    """Write `out/sessions/...` and `out/all.jsonl` (the same lines, in replay order); (lines, bytes)."""
    sources = session_files(root)
    if not sources:
        raise FileNotFoundError(f"no session files under {root}")
    rng = random.Random(seed)
    paths, weights = zip(*sources, strict=True)
    picks = rng.choices(paths, weights=weights, k=files)
    sessions = out / "sessions"
    written: list[Path] = []
    for number, source in enumerate(picks):
        start = YEAR_START + dt.timedelta(milliseconds=number * YEAR_MS // files + rng.randrange(3_600_000))
        start = start.replace(microsecond=0)
        relative, data = make_session(source, number, seed, start)
        path = sessions / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    lines = size = 0
    with (out / "all.jsonl").open("wb") as joined:
        for path in sorted(written, key=str):  # the order `replay DIR` reads them
            data = path.read_bytes()
            joined.write(data)
            lines += data.count(b"\n")
            size += len(data)
    return lines, size


def write_day(out: Path, archive_files: int, day: int, size: int, seed: int = 1) -> tuple[int, int]:
    """A day after the archive's year: session files under `out` (a `sessions/` directory) drawn as
    `write` draws them, numbered after the archive's (their ids new), until `size` bytes; (files, bytes)."""
    sources = session_files()
    rng = random.Random(f"{seed}/day/{day}")
    paths, weights = zip(*sources, strict=True)
    start = YEAR_START + dt.timedelta(days=366 + day)
    files = written = 0
    while written < size:
        number = archive_files + day * 100_000 + files
        relative, data = make_session(rng.choices(paths, weights=weights)[0], number, seed, start)
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files += 1
        written += len(data)
        start += dt.timedelta(minutes=7)
    return files, written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    lines, size = write(args.out, args.files, args.seed)
    print(f"{args.files} files, {lines} lines, {size / 2**20:.1f} MiB -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
