"""The errors the command line maps to exit statuses (ingestor/cli/commands.py: `main`).

Raised by the layers below the CLI (sources, sinks, the stores' readers), which must not import the
CLI: they live here, beneath all of them. 2 (usage): `SourceConfigError`, `SinkError`,
`MissingPathError`; 1 (failure): `NotFoundError`, `HistoryUnavailableError`.
"""

from __future__ import annotations


class SourceConfigError(Exception):
    """A source cannot start as configured (bad flags, an unusable file, an address in use): the
    command exits with status 2 before reading anything."""


class MissingPathError(Exception):
    """A replay path that does not exist (reported before anything is read)."""


class SinkError(ValueError):
    """A `--sink` that cannot be used; the message is meant for the person who typed it."""


class NotFoundError(LookupError):
    """The id names nothing in the store (or there is no store)."""


class HistoryUnavailableError(Exception):
    """A history reader cannot answer (the deployment unreachable, refusing the key): the message
    names where it looked and what to do."""
