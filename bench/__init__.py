"""Benchmark suite for codex-ingestor: workloads, a Convex blackhole, measurements and the report.

Run it with `bench/run.sh` (or `python -m bench`); see docs/benchmarks.md.
"""
