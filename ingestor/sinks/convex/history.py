"""The read side of the Convex store, for `ingestor show --sink convex`."""

from __future__ import annotations

from typing import Any, Final

from ingestor.sinks.base import json_numbers
from ingestor.sinks.convex.client import ConvexHttp


class ConvexHistory:
    """The `HistoryReader` behind `ingestor show --sink convex`: the `history:*` queries.

    Results as the queries return them, numbers in the readers' one form (`json_numbers`: orjson
    parses an integral float64 past 64 bits, which Convex writes in digits, as a float).
    """

    PAGE_SIZE: Final = 200

    def __init__(self, api: ConvexHttp) -> None:
        self._api = api

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        return _optional_dict(
            await self._api.query("history:getConversation", {"conversationId": conversation_id})
        )

    async def get_turn(self, turn_id: str) -> dict[str, Any] | None:
        return _optional_dict(await self._api.query("history:getTurn", {"turnId": turn_id}))

    async def get_command_output(self, call_id: str) -> dict[str, Any] | None:
        return _optional_dict(await self._api.query("history:getCommandOutput", {"callId": call_id}))

    async def list_events(self, conversation_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Every event (or the first `limit`), following Convex pagination cursors to the end."""
        events: list[dict[str, Any]] = []
        cursor: str | None = None
        while limit is None or len(events) < limit:
            page = await self._api.query(
                "history:listEvents",
                {
                    "conversationId": conversation_id,
                    "paginationOpts": {"numItems": self.PAGE_SIZE, "cursor": cursor},
                },
            )
            events.extend(json_numbers(page["page"]))
            if page["isDone"]:
                break
            cursor = page["continueCursor"]
        return events if limit is None else events[:limit]

    async def list_conversations(
        self, cursor: str | None, count: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await self._page("summaries:listConversations", cursor, count)

    async def list_usage(self, cursor: str | None, count: int) -> tuple[list[dict[str, Any]], str | None]:
        return await self._page("summaries:listUsage", cursor, count)

    async def _page(
        self, name: str, cursor: str | None, count: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        page = await self._api.query(name, {"paginationOpts": {"numItems": count, "cursor": cursor}})
        return json_numbers(page["page"]), None if page["isDone"] else page["continueCursor"]

    async def aclose(self) -> None:
        await self._api.aclose()


def _optional_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        result: dict[str, Any] = json_numbers(value)
        return result
    raise TypeError(f"expected an object or null from Convex, got {type(value).__name__}")
