"""Sinks: where operations end up (Convex, an embedded SQLite store, JSONL, or nowhere)."""
