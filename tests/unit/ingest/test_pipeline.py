"""Prefetch keeps order, re-raises errors, and prepared_parts honours the limit."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from stages.common.errors import IngestError
from stages.common.events import decode_events
from stages.common.rows import RowParser
from stages.common.schema import SchemaError, load_schema, parse_schema
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
    parts = [j() for j in prepared_parts(batches, limit=7, part_lines=3, schema=CRITEO)]
    assert [p.read for p in parts] == [3, 2, 2]
    assert parts[-1].keys == [b"s1:5", b"s1:6"]


ROW = b"\t".join([b"1"] + [b"1"] * 13 + [b"0123abcd"] * 26)
CRITEO = load_schema("criteo")
HEADED = parse_schema({
    "name": "headed", "format": {"kind": "csv", "header": True}, "label": {"name": "y"},
    "dense": [{"name": "price"}], "categorical": [{"name": "shop"}],
})  # fmt: skip


def test_a_header_line_names_the_columns_and_is_neither_event_nor_dead_letter() -> None:
    data = b"shop,extra,price,y\nacme,x,1.5,1\nbolt,y,oops,0\n"
    batch = SourceBatch(LineSplitter().feed(data), SourcePosition("f", "t"), 7)
    (part,) = [j() for j in prepared_parts([batch], None, 100, HEADED)]
    assert (part.read, part.headers, len(part.values), len(part.dead)) == (3, 1, 1, 1)
    assert part.dead[0].reason == "price is not a number: 'oops'" and part.dead[0].line == 3
    assert part.values[0].split(b"\t")[-1] == b"1,1.5,acme"  # the wire order: y, price, shop
    decoded = decode_events(part.values, RowParser.for_schema(HEADED))
    assert not decoded.bad and decoded.events.rows.dense.tolist() == [[1.5]]


def test_a_resumed_header_file_uses_its_first_line_and_a_bad_header_stops() -> None:
    lines = LineSplitter(first_line=5).feed(b"acme,2,1\n")
    resumed = SourceBatch(lines, SourcePosition("f", "t"), 7, file_head=b"shop,price,y")
    (part,) = [j() for j in prepared_parts([resumed], None, 100, HEADED)]
    assert part.keys == [b"t:4"] and part.values[0].endswith(b"\t1,2,acme")
    with pytest.raises(IngestError, match="gave none"):
        list(prepared_parts([SourceBatch(lines, SourcePosition("f", "t"), 7)], None, 9, HEADED))
    bad = SourceBatch(LineSplitter().feed(b"shop,y\n"), SourcePosition("f", "t"), 7)
    with pytest.raises(SchemaError, match="has no column 'price'"):
        list(prepared_parts([bad], None, 100, HEADED))
