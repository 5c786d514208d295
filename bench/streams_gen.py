"""The per-stream cost alone: one real app-server recording copied N times, as N files and as one file.

`bench/archive_gen.py`'s one-file twin of a sessions archive is not the same work: inside one stream,
a second session file's `session_meta` reads as a sub-agent's copy of its parent's history (raw events
only), so the one file stores about half the rows of the archive. An app-server stream, though, may
carry many threads, each its own conversation: N copies of a 0.169 app-server recording (every UUID
and `call_*` id derived from the copy's number, as archive_gen does) make the same operations whether
each copy is its own file or all are one file, but for one per stream (its final activity time). The
difference of the two replays, per file, is what a stream costs: opening and reading its file, its
normalizer, its hand-over, its rows' place in the store's transactions.

    python -m bench.streams_gen --files 2000 --out DIR     # DIR/files/s00000.jsonl..., DIR/all.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.archive_gen import _CALL_ID, _UUID, _derived_call, _derived_uuid
from bench.templates import FIXTURES

RECORDING = FIXTURES / "codex-0.169.0" / "app-server" / "multi_turn.jsonl"
"""Two turns, commands with output, reasoning, usage, rate limits: 64 lines, 27 KiB."""


def copy_of(recording: bytes, number: int) -> bytes:
    tag = b"%d:" % number
    data = _UUID.sub(lambda m: _derived_uuid(tag, m.group(0), 0), recording)
    return _CALL_ID.sub(lambda m: _derived_call(tag, m.group(0)), data)


def write(out: Path, files: int, recording: Path = RECORDING) -> int:
    """Writes the copies; returns their total size in bytes."""
    source = recording.read_bytes()
    (out / "files").mkdir(parents=True, exist_ok=True)
    size = 0
    with open(out / "all.jsonl", "wb") as whole:
        for number in range(files):
            data = copy_of(source, number)
            (out / "files" / f"s{number:05d}.jsonl").write_bytes(data)
            whole.write(data)
            size += len(data)
    return size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    size = write(args.out, args.files)
    print(f"{args.files} files, {size / 2**20:.1f} MiB -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
