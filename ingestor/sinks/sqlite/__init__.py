"""The embedded SQLite store: `sink` writes batches, `schema` declares its tables (the same as Convex's),
`merge` the upsert rules (the same as convex/lib/merge.ts), `history` reads it back for `ingestor show`."""
