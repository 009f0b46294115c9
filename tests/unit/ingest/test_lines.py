"""LineSplitter: line numbers, CRLF, chunk boundaries, overlong lines."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.ingest.core.lines import LineSplitter


def split_all(chunks: list[bytes], max_line: int = 64) -> list[tuple[int, bytes, int | None]]:
    splitter = LineSplitter(max_line)
    out = []
    for batch in [splitter.feed(c) for c in chunks] + [splitter.finish()]:
        for i in range(len(batch)):
            out.append((batch.first_line + i, batch.line(i), batch.full_length.get(i)))
    return out


def reference(data: bytes, max_line: int = 64) -> list[tuple[int, bytes, int | None]]:
    """What the splitter must return: split on \\n, \\r\\n and a final \\r as line ends."""
    if data.endswith(b"\r"):
        data = data[:-1]
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [
        (i + 1, line[:max_line], len(line) if len(line) > max_line else None)
        for i, line in enumerate(lines)
    ]


def test_lines_numbers_crlf_and_last_line_without_newline() -> None:
    got = split_all([b"ab\r", b"\ncd\n\nxyz"])
    assert got == [(1, b"ab", None), (2, b"cd", None), (3, b"", None), (4, b"xyz", None)]


_chunked_data = given(
    data=st.binary(max_size=400).map(lambda b: b.replace(b"z", b"\n").replace(b"y", b"\r")),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)


def cut(data: bytes, cuts: list[int]) -> list[int]:
    """Sorted chunk boundaries of `data` at `cuts`, with 0 and len(data)."""
    return sorted({c for c in cuts if c < len(data)} | {0, len(data)})


def test_overlong_lines_are_cut_and_measured() -> None:
    got = split_all([b"0123456789ABCDEF", b"GH\nshort\n", b"x" * 30, b"\n"], max_line=10)
    assert got == [(1, b"0123456789", 18), (2, b"short", None), (3, b"x" * 10, 30)]


def test_a_bad_limit_is_rejected() -> None:
    with pytest.raises(ValueError):
        LineSplitter(0)


@settings(max_examples=200, deadline=None)
@_chunked_data
def test_any_chunking_gives_the_reference_lines(data: bytes, cuts: list[int]) -> None:
    points = cut(data, cuts)
    chunks = [data[a:b] for a, b in zip(points, points[1:])]
    assert split_all(chunks, max_line=16) == reference(data, max_line=16)


@settings(max_examples=100, deadline=None)
@_chunked_data
def test_a_chunk_buffer_may_be_reused_after_feed(data: bytes, cuts: list[int]) -> None:
    points = cut(data, cuts)
    splitter, out = LineSplitter(16), []
    for a, b in pairwise(points):
        buffer = bytearray(data[a:b])
        batch = splitter.feed(buffer)
        buffer[:] = b"?" * len(buffer)  # the reader reads the next chunk into it
        out += [(batch.first_line + i, batch.line(i), batch.full_length.get(i))
                for i in range(len(batch))]
    last = splitter.finish()
    out += [(last.first_line + i, last.line(i), last.full_length.get(i))
            for i in range(len(last))]
    assert out == reference(data, max_line=16)
