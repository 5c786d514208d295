"""The ceiling: read FILE line by line and parse each line with `orjson.loads`, nothing else.

Prints `{"events", "bytes", "loop_s"}` as JSON (`loop_s`: the loop alone, without start-up).

    python -m bench.ceiling FILE
"""

from __future__ import annotations

import sys
import time

import orjson


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    loads = orjson.loads
    events = size = 0
    start = time.perf_counter()
    with open(args[0], "rb") as f:
        for line in f:
            loads(line)
            events += 1
            size += len(line)
    loop_s = time.perf_counter() - start
    sys.stdout.write(orjson.dumps({"events": events, "bytes": size, "loop_s": loop_s}).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
