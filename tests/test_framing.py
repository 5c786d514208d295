"""The line splitter: any chunking of the same bytes gives the same lines, memory stays bounded."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from ingestor.framing import OVERSIZE_KEEP_BYTES, LineSplitter
from ingestor.lines import Line


def split_all(chunks: list[bytes], max_line_bytes: int = 1 << 20) -> list[Line]:
    splitter = LineSplitter("t", max_line_bytes)
    lines: list[Line] = []
    for i, chunk in enumerate(chunks):
        lines.extend(splitter.feed(chunk, i))
    lines.extend(splitter.finish(len(chunks)))
    return lines


def reference(data: bytes, max_line_bytes: int) -> list[tuple[int, bytes, int | None]]:
    """What the splitter must produce: (ordinal, data, oversize), from the whole input at once."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # the input ended with a newline: no unterminated last line
    out: list[tuple[int, bytes, int | None]] = []
    for ordinal, piece in enumerate(pieces):
        if piece.endswith(b"\r"):
            piece = piece[:-1]
        if not piece:
            continue
        if len(piece) > max_line_bytes:
            out.append((ordinal, piece[: min(OVERSIZE_KEEP_BYTES, max_line_bytes)], len(piece)))
        else:
            out.append((ordinal, piece, None))
    return out


def summary(lines: list[Line]) -> list[tuple[int, bytes, int | None]]:
    return [(line.ordinal, line.data, line.oversize) for line in lines]


def test_lines_carry_source_ordinal_and_arrival_time() -> None:
    splitter = LineSplitter("unix:/s#3")
    assert splitter.feed(b'{"a":1}\n{"b":', 100) == [Line("unix:/s#3", 0, 100, b'{"a":1}')]
    assert splitter.feed(b"2}\n", 200) == [Line("unix:/s#3", 1, 200, b'{"b":2}')]
    assert splitter.ordinal == 2


def test_crlf_is_tolerated_also_when_split_between_reads() -> None:
    assert summary(split_all([b"a\r\nb\r", b"\nc\r\n"])) == [
        (0, b"a", None),
        (1, b"b", None),
        (2, b"c", None),
    ]


def test_partial_lines_across_many_reads() -> None:
    data = b'{"type":"turn.started"}\n{"type":"item.completed","item":{"text":"hello"}}\n'
    for size in (1, 2, 3, 7, 64):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert [line.data for line in split_all(chunks)] == data.split(b"\n")[:2]


def test_final_line_without_newline_is_still_a_line() -> None:
    splitter = LineSplitter("t")
    assert splitter.feed(b"one\ntwo", 1) == [Line("t", 0, 1, b"one")]
    assert splitter.finish(2) == [Line("t", 1, 2, b"two")]
    assert splitter.finish(3) == []


def test_empty_lines_are_skipped_but_counted() -> None:
    lines = split_all([b"\n\r\na\n\n\nb\n"])
    assert summary(lines) == [(2, b"a", None), (5, b"b", None)]


def test_oversize_line_is_reported_with_its_head_and_length() -> None:
    lines = split_all([b"ok\n" + b"x" * 50 + b"\nafter\n"], max_line_bytes=10)
    assert summary(lines) == [(0, b"ok", None), (1, b"x" * 10, 50), (2, b"after", None)]


def test_oversize_line_spread_over_reads_keeps_memory_bounded() -> None:
    limit = 1 << 20
    splitter = LineSplitter("t", limit)
    block = b"y" * (256 * 1024)
    out = splitter.feed(b"first\n" + block, 1)
    for _ in range(63):  # 16 MiB in all, arriving in 256 KiB reads
        out += splitter.feed(block, 2)
        # Never more than the limit (plus one read) is held, whatever the line's length.
        assert splitter._parts_len <= limit + len(block)
        assert len(splitter._head) <= OVERSIZE_KEEP_BYTES
    out += splitter.feed(b"\r\nnext\n", 3)
    assert summary(out) == [
        (0, b"first", None),
        (1, b"y" * OVERSIZE_KEEP_BYTES, 64 * len(block)),
        (2, b"next", None),
    ]


def test_oversize_line_at_end_of_input_without_newline() -> None:
    assert summary(split_all([b"a\n", b"z" * 30], max_line_bytes=8)) == [(0, b"a", None), (1, b"z" * 8, 30)]


def test_line_exactly_at_the_limit_is_not_oversize() -> None:
    assert summary(split_all([b"12345678\r\n", b"123456789\n"], max_line_bytes=8)) == [
        (0, b"12345678", None),
        (1, b"12345678", 9),
    ]


@given(
    data=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b"x" * 30]),
        ),
        max_size=30,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
    max_line_bytes=st.integers(min_value=1, max_value=40),
)
def test_any_chunking_yields_exactly_the_lines(data: bytes, cuts: list[int], max_line_bytes: int) -> None:
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert summary(split_all(chunks, max_line_bytes)) == reference(data, max_line_bytes)
