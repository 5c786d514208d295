"""A small, dated table of model prices, for `ingestor usage --cost`: an estimate, never a bill.

USD per million tokens, from OpenAI's published API list prices as of `PRICES_AS_OF` (Codex on a
ChatGPT plan is not billed per token at all). Cached input is billed at its own rate, the rest of
the input at the input rate; reasoning tokens are output tokens and already in the output count.
A model not listed gets no cost (shown as `-`): better none than a made-up one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    cached_input: float
    output: float


PRICES_AS_OF: Final = "2025-11-20"

PRICES: Final[dict[str, Price]] = {
    "gpt-5": Price(1.25, 0.125, 10.0),
    "gpt-5-codex": Price(1.25, 0.125, 10.0),
    "gpt-5.1": Price(1.25, 0.125, 10.0),
    "gpt-5.1-codex": Price(1.25, 0.125, 10.0),
    "gpt-5.1-codex-mini": Price(0.25, 0.025, 2.0),
    "gpt-5-mini": Price(0.25, 0.025, 2.0),
    "gpt-5-nano": Price(0.05, 0.005, 0.4),
    "gpt-4.1": Price(2.0, 0.5, 8.0),
    "o3": Price(2.0, 0.5, 8.0),
    "o4-mini": Price(1.1, 0.275, 4.4),
}


def cost_usd(
    model: str | None, input_tokens: int, cached_input_tokens: int, output_tokens: int
) -> float | None:
    """The estimated cost of these tokens on `model`, or None when the table has no price for it."""
    price = PRICES.get(model or "")
    if price is None:
        return None
    cached = min(cached_input_tokens, input_tokens)
    return (
        (input_tokens - cached) * price.input + cached * price.cached_input + output_tokens * price.output
    ) / 1_000_000
