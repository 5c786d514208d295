"""The sinks' typed options, built from the parsed command line (shared by every command)."""

from __future__ import annotations

import argparse

from ingestor.sinks.convex.deployment import ConvexOptions


def convex_options(args: argparse.Namespace, *, delivery: bool) -> ConvexOptions:
    """The Convex sink's options as parsed (`add_convex_arguments`); without `delivery`, only the
    deployment's (`show` has no spool)."""
    if not delivery:
        return ConvexOptions(url=args.convex_url, key_file=args.convex_key_file)
    return ConvexOptions(
        url=args.convex_url,
        key_file=args.convex_key_file,
        state_dir=args.state_dir,
        batch_max_ops=args.batch_max_ops,
        batch_max_bytes=args.batch_max_bytes,
        batch_max_age=args.batch_max_age_ms / 1000,
        spool_max_bytes=args.spool_max_bytes,
        flush_timeout=args.flush_timeout,
        unready_after=args.unready_after,
    )
