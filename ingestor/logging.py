"""structlog set-up: JSON lines for machines (stderr not a terminal), readable lines for people.

Secrets registered with :func:`redact` are masked in the final rendered line, so they cannot leak
through any field, exception message or traceback. A secret is masked where it stands as a whole
token (not inside a longer run of letters and digits): a header, a URL or an error text shows it so,
while masking every substring would mangle ordinary words and, by what it masks, reveal the secret.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Final, TextIO

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

MASK: Final = "[REDACTED]"
MIN_SECRET_LENGTH: Final = 16
"""Shorter values cannot be real keys or tokens, and masking them would hit ordinary text."""

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def redact(secret: str) -> None:
    """Mask `secret` in every log line from now on."""
    global _pattern
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"a secret to mask must have at least {MIN_SECRET_LENGTH} characters")
    _secrets.add(secret)
    # Longest first, so a secret containing another is masked whole.
    alternatives = "|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True))
    _pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")


def scrub(text: str) -> str:
    """`text` with every registered secret masked (also for error messages shown outside logs)."""
    return text if _pattern is None else _pattern.sub(MASK, text)


def _json_renderer(_logger: WrappedLogger, _name: str, event: EventDict) -> str:
    return orjson.dumps(event, default=str).decode()


class _Scrubbing:
    """Wraps the final renderer: masking the rendered text covers every field and traceback."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str:
        rendered = self._renderer(logger, name, event)
        return scrub(rendered if isinstance(rendered, str) else str(rendered))


def configure_logging(level: str = "info", *, stream: TextIO | None = None, json: bool | None = None) -> None:
    """Configure structlog once per process; `json=None` picks by whether `stream` is a terminal."""
    out = stream if stream is not None else sys.stderr
    use_json = not out.isatty() if json is None else json
    renderer: Processor = _json_renderer if use_json else structlog.dev.ConsoleRenderer(colors=False)
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors.append(structlog.processors.format_exc_info)
    processors.append(_Scrubbing(renderer))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **context: Any) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name, component=name, **context)
    return logger
