"""What a naive client does: one `app:<op>` mutation per operation, sequentially, over keep-alive.

Reads operations (`{"op","key","args"}` per line, as `ingestor replay FILE --sink jsonl:-` prints
them), sends the first `--limit` of them to `{url}/api/mutation` one by one with httpx, and prints
`{"ops", "seconds", "events"}` as JSON. `events` is how many input lines those ops came from when the
ops file has a companion count (`--events-per-op`), so that the rate compares with the daemon's.

    python -m bench.naive --url http://127.0.0.1:PORT --ops OPS.jsonl --limit 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import orjson


def load_ops(path: Path, limit: int) -> list[dict[str, Any]]:
    with path.open("rb") as f:
        return [orjson.loads(line) for line in islice(f, limit)]


def send_all(url: str, ops: list[dict[str, Any]], admin_key: str) -> float:
    headers = {"authorization": f"Convex {admin_key}", "content-type": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
        start = time.perf_counter()
        for op in ops:
            body = {"path": f"app:{op['op']}", "args": {"key": op["key"], **op["args"]}, "format": "json"}
            r = client.post("/api/mutation", content=orjson.dumps(body))
            r.raise_for_status()
            if r.json().get("status") != "success":
                raise RuntimeError(f"mutation failed: {r.text[:200]}")
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--ops", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--events-per-op", type=float, default=1.0)
    ap.add_argument("--admin-key", default="bench")
    args = ap.parse_args(argv)
    ops = load_ops(args.ops, args.limit)
    seconds = send_all(args.url, ops, args.admin_key)
    out = {"ops": len(ops), "seconds": seconds, "events": len(ops) * args.events_per_op}
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
