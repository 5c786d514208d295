"""What every sink and every history reader provides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ingestor.ops import Op


class Sink(Protocol):
    async def write(self, ops: Sequence[Op]) -> None:
        """Accept `ops` in order. Returns once they are durable: stored, or safe in the spool."""

    async def aclose(self) -> None:
        """Flush what can be flushed and release resources."""


class HistoryReader(Protocol):
    """The read side behind `ingestor show`: the same shapes as the Convex `history:*` queries."""

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None: ...

    async def get_turn(self, turn_id: str) -> dict[str, Any] | None: ...

    async def get_command_output(self, call_id: str) -> dict[str, Any] | None: ...

    async def list_events(self, conversation_id: str, limit: int | None = None) -> list[dict[str, Any]]: ...
