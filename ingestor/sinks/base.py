"""What every sink and every history reader provides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from ingestor.ops import Op


class Sink(Protocol):
    """What the pipeline calls on every sink (a sink that spools is also `Spooling`)."""

    async def write(self, ops: Sequence[Op]) -> None:
        """Accept `ops` in order. Returns once they are durable: stored, or safe in the spool."""

    async def write_batches(self, batches: Sequence[Sequence[Op]]) -> None:
        """`write` each batch, in order: the batcher's way to hand over a burst. A store that can
        commit them at once does (SQLite: one transaction); the others write them one by one."""

    async def aclose(self) -> None:
        """Flush what can be flushed and release resources."""


@dataclass(frozen=True, slots=True)
class Leftover:
    """Operations a closed sink could not deliver: they wait in its spool for a later run."""

    ops: int
    state_dir: Path
    refused: str | None
    """`auth` or `config` when the deployment refused the requests (a wrong key, say), else None."""


@runtime_checkable
class Spooling(Protocol):
    """A sink that may close with operations still waiting in its spool (the Convex sink)."""

    def leftover(self) -> Leftover | None:
        """What was left undelivered when the sink closed (None: everything was delivered)."""

    def input_stopped(self) -> None:
        """Reading has stopped for good: take what was read even into a full spool (a bounded
        amount, what the readers held), so that shutdown never waits for the deployment."""


class HistoryReader(Protocol):
    """The read side behind `ingestor show`: the same shapes as the Convex `history:*` queries.

    Numbers included: every reader returns them as `json_numbers` does.
    """

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None: ...

    async def get_turn(self, turn_id: str) -> dict[str, Any] | None: ...

    async def get_command_output(self, call_id: str) -> dict[str, Any] | None: ...

    async def list_events(self, conversation_id: str, limit: int | None = None) -> list[dict[str, Any]]: ...

    async def list_conversations(
        self, cursor: str | None, count: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of conversation summaries, the most recently active first (`summaries:listConversations`),
        and the cursor of the next page (None after the last)."""
        ...

    async def list_usage(self, cursor: str | None, count: int) -> tuple[list[dict[str, Any]], str | None]:
        """A page of usage snapshots in arrival order, each with its turn's conversation, thread and
        model and, for a fork, the conversation's `forkedFromUsage` (`summaries:listUsage`), and the
        cursor of the next page (None after the last)."""
        ...


_PLAIN_DIGITS_BELOW: Final = 1e21
"""JavaScript (so Convex) writes integral numbers below this in plain digits, larger ones as `1e+21`."""


def json_numbers(value: Any) -> Any:
    """`value` with its numbers as a Convex query returns them, the one form every reader gives.

    Convex holds every number as a float64 and writes an integral one without a fraction: the JSON
    text `11.0` stored reads back as `11`, and an integral value up to 1e21 in plain digits, which a
    JSON parser may give as an int or (orjson, past 64 bits) a float. Here an integral float below
    1e21 becomes the int of the same value (exact: it is that float's value); other numbers stay.
    """
    kind = type(value)
    if kind is float:
        if value.is_integer() and abs(value) < _PLAIN_DIGITS_BELOW:
            return int(value)
        return value
    if kind is list:
        return [json_numbers(item) for item in value]
    if kind is dict:
        return {key: json_numbers(item) for key, item in value.items()}
    return value
