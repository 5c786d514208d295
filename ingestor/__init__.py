"""codex-ingestor: capture Codex CLI event streams into Convex or an embedded SQLite store."""

__version__ = "0.1.0"
