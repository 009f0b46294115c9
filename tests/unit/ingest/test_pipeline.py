"""Prefetch keeps order, re-raises errors, and prepared_parts honours the limit."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from stages.ingest.core.lines import LineSplitter
from stages.ingest.core.prepare import PreparedBatch, SourcePosition
from stages.ingest.pipeline import Job, Prefetch, prepared_parts
from stages.ingest.sources import SourceBatch


def job(value: int, delay: float) -> Job:
    def run() -> PreparedBatch:
        time.sleep(delay)
        return PreparedBatch([], [], [], value)

    return run


def test_results_come_in_order_even_when_later_jobs_finish_first() -> None:
    jobs = [job(i, 0.05 if i % 2 == 0 else 0.0) for i in range(8)]
    with Prefetch(jobs, workers=3, depth=4) as parts:
        assert [p.read for p in parts] == list(range(8))


def test_an_error_in_the_source_reaches_the_consumer() -> None:
    def jobs() -> Iterator[Job]:
        yield job(1, 0)
        raise OSError("disk gone")

    with Prefetch(jobs()) as parts, pytest.raises(OSError, match="disk gone"):
        list(parts)


def test_closing_early_stops_an_endless_source() -> None:
    def endless() -> Iterator[Job]:
        while True:
            yield job(1, 0)

    with Prefetch(endless()) as parts:
        assert next(iter(parts)).read == 1  # leaving the block must not hang


def test_prepared_parts_cuts_to_the_limit_and_part_size() -> None:
    splitter = LineSplitter()
    position = SourcePosition("-", "s1")
    batches = [
        SourceBatch(splitter.feed(b"".join(ROW + b"\n" for _ in range(5))), position, 0),
        SourceBatch(splitter.feed(b"".join(ROW + b"\n" for _ in range(5))), position, 0),
    ]
    parts = [j() for j in prepared_parts(batches, limit=7, part_lines=3)]
    assert [p.read for p in parts] == [3, 2, 2]
    assert parts[-1].keys == [b"s1:5", b"s1:6"]


ROW = b"\t".join([b"1"] + [b"1"] * 13 + [b"0123abcd"] * 26)
