"""Logging set-up: JSON lines off a terminal, readable lines on one, secrets masked everywhere."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest
import structlog

from ingestor.logging import MASK, configure_logging, get_logger, redact, scrub


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_json_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    get_logger("t").info("hello", n=1)
    get_logger("t").debug("filtered out")
    [line] = stream.getvalue().splitlines()
    event = orjson.loads(line)
    assert event["event"] == "hello" and event["n"] == 1 and event["level"] == "info"
    assert event["component"] == "t" and event["timestamp"].endswith("Z")


def test_readable_lines_on_a_terminal() -> None:
    stream = Terminal()
    configure_logging("debug", stream=stream)
    get_logger("t").debug("hello", n=1)
    line = stream.getvalue()
    assert "hello" in line and "n=1" in line and not line.startswith("{")


@pytest.mark.parametrize("json", [True, False])
def test_secrets_are_masked_in_fields_messages_and_tracebacks(json: bool) -> None:
    secret = "prod:some-deploy|c2VjcmV0"
    redact(secret)
    stream = Terminal() if not json else io.StringIO()
    configure_logging("info", stream=stream, json=json)
    try:
        raise ValueError(f"bad header Convex {secret}")
    except ValueError:
        get_logger("t").exception(f"failed with {secret}", header=f"Convex {secret}")
    output = stream.getvalue()
    assert secret not in output
    assert output.count(MASK) >= 3
    assert scrub(f"x {secret} y") == f"x {MASK} y"


def test_a_secret_is_masked_as_a_token_not_inside_words() -> None:
    secret = "abcdefghijklmnop"
    redact(secret)
    # As a token: in a header, a URL, after a colon, in quotes.
    for text in (f"Convex {secret}", f"https://x/?k={secret}&a=1", f"Convex {secret}:eyJ9", f"'{secret}'"):
        assert secret not in scrub(text) and MASK in scrub(text)
    # Inside a longer run of letters and digits it is another word: masking it would mangle the line
    # and show where the secret is.
    for text in (f"x{secret}", f"{secret}9", "ingestor.sinks.convex"):
        assert scrub(text) == text


def test_a_secret_too_short_to_be_real_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        redact("k")
