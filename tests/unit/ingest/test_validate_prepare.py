"""Validation reasons, the fast path's agreement with VALID_ROW, dead letters, event encoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.common.dead_letter import DeadLetterRecord, FilePosition
from stages.common.errors import ContractError
from stages.common.events import decode_events, encode_event, event_id
from stages.ingest.core.lines import LineBatch, LineSplitter
from stages.ingest.core.prepare import SourcePosition, prepare_batch
from stages.ingest.core.synthetic import SyntheticConfig, generate_rows
from stages.common.schema import load_schema
from stages.ingest.core.validate import (
    DeadLetter,
    RowValidator,
    fast_valid,
    line_reason,
    reason_kind,
    separated_lines,
)

ROWS = generate_rows(SyntheticConfig(seed=5), 0, 50).rows
GOOD = ROWS[0]
CRITEO = load_schema("criteo")
VALIDATOR = RowValidator.for_schema(CRITEO)
PARSER = VALIDATOR.parser


def one_batch(data: bytes, max_line: int = 1024) -> tuple[LineBatch, LineBatch]:
    splitter = LineSplitter(max_line)
    return splitter.feed(data), splitter.finish()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "blank line"),
        (b"\r", "blank line"),
        (b"0\t1", "expected 40 fields, got 2"),
        (b"2" + GOOD[1:], "label must be 0 or 1, got '2'"),
        (b"\t".join([b"0", b"x", *GOOD.split(b"\t")[2:]]), "I1 is not an integer: 'x'"),
        (b"\xff" + GOOD[1:], "not UTF-8: byte 0xff at offset 0"),
    ],
)
def test_line_reasons(line: bytes, reason: str) -> None:
    assert line_reason(PARSER, line) == reason


def test_too_long_reason_and_kinds() -> None:
    too_long = line_reason(PARSER, b"x" * 10, full_length=70_000)
    assert too_long == "line too long: 70000 bytes (limit 65536)"
    assert reason_kind("expected 40 fields, got 3") == "wrong number of fields"
    hex_reason = "C7 is not hex (1 to 8 digits)"
    assert reason_kind(f"{hex_reason}: 'zz'") == hex_reason


def test_dead_letter_is_the_shared_record() -> None:
    letter = DeadLetter("/data/x.tsv", "fabc", 7, 6, "blank line", b"\xff\x00ab", 4, 1234)
    assert letter.key() == b"fabc:6"
    fields = json.loads(letter.value())
    assert fields["schema_version"] == 1 and fields["kind"] == "blank line"
    assert fields["stage"] == "ingest" and fields["raw_b64"] == "/wBhYg=="
    record = DeadLetterRecord.parse(letter.value())
    assert record == letter.record()
    assert record.raw == b"\xff\x00ab" and record.key == b"fabc:6" and record.time_ms == 1234
    assert record.position == FilePosition(source="/data/x.tsv", source_tag="fabc", line=7, seq=6)


def test_malformed_dead_letters_raise_contract_error() -> None:
    with pytest.raises(ContractError):
        DeadLetterRecord.parse(b"not json")
    good = json.loads(DeadLetter("s", "t", 1, 0, "r", b"", 0, 0).value())
    with pytest.raises(ContractError, match="unknown field 'extra'"):
        DeadLetterRecord.parse(json.dumps({**good, "extra": 1}).encode())
    with pytest.raises(ContractError, match="schema_version"):
        DeadLetterRecord.parse(json.dumps({**good, "schema_version": 9}).encode())


def mutations() -> st.SearchStrategy[bytes]:
    """Rows near the valid ones: a byte replaced, inserted or deleted, or fields changed."""
    alphabet = b"0123456789abcdefABx-\t\r \xff"
    base = st.sampled_from(ROWS)

    def mutate(row: bytes, pos: int, byte: int, kind: int) -> bytes:
        pos %= len(row) + 1
        if kind == 0:
            return row[:pos] + bytes([byte]) + row[pos + 1 :]
        if kind == 1:
            return row[:pos] + bytes([byte]) + row[pos:]
        if kind == 2:
            return row[:pos] + row[pos + 1 :]
        return row.replace(b"\t", b"\t-", 1) if byte % 2 else row + b"\r"

    return st.builds(
        mutate, base, st.integers(0, 400), st.sampled_from(list(alphabet)), st.integers(0, 3)
    )


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.one_of(mutations(), st.sampled_from(ROWS)), min_size=1, max_size=20))
def test_fast_path_agrees_with_the_row_parser(lines: list[bytes]) -> None:
    lines = [line.replace(b"\n", b"") for line in lines]
    if lines[-1].endswith(b"\r"):
        lines[-1] += b"x"  # a final \r would be taken as the line end
    batch, _ = one_batch(b"\n".join(lines) + b"\n")
    batch_lines = [batch.line(i) for i in range(len(batch))]
    expected = np.array([PARSER.row_error(line) is None for line in batch_lines])
    assert VALIDATOR.fast is not None
    assert fast_valid(separated_lines(batch), batch, VALIDATOR.fast).tolist() == expected.tolist()


def test_events_equal_the_contract_encoding_and_decode() -> None:
    data = b"\n".join([ROWS[0], b"oops", ROWS[1], b"", ROWS[2]]) + b"\n"
    batch, _ = one_batch(data)
    prepared = prepare_batch(batch, SourcePosition("f.tsv", "ftag", seq_base=100), 1700, VALIDATOR)
    assert prepared.read == 5 and len(prepared.values) == 3 and len(prepared.dead) == 2
    assert prepared.keys == [b"ftag:100", b"ftag:102", b"ftag:104"]
    expected = encode_event(event_id("ftag", 102), 1700, ROWS[1], CRITEO.schema_hash)
    assert prepared.values[1] == expected
    assert [(d.line, d.seq, d.kind) for d in prepared.dead] == [
        (2, 101, "wrong number of fields"),
        (4, 103, "blank line"),
    ]
    decoded = decode_events(prepared.values)
    assert not decoded.bad and decoded.events.event_ids == ["ftag:100", "ftag:102", "ftag:104"]


def test_per_row_event_times() -> None:
    batch, _ = one_batch(b"\n".join(ROWS[:3]) + b"\n")
    times = np.array([5, 6, 7], dtype=np.int64)
    prepared = prepare_batch(batch, SourcePosition("synthetic", "syn1-x"), times, VALIDATOR)
    assert [v.split(b"\t")[3] for v in prepared.values] == [b"5", b"6", b"7"]


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=3000), cut=st.integers(0, 3000))
def test_random_bytes_counts_add_up(data: bytes, cut: int) -> None:
    splitter = LineSplitter(max_line=256)
    batches = [splitter.feed(data[:cut]), splitter.feed(data[cut:]), splitter.finish()]
    read = sent = dead = 0
    for batch in batches:
        prepared = prepare_batch(batch, SourcePosition("-", "s1"), 0, VALIDATOR)
        assert prepared.read == len(batch) == len(prepared.values) + len(prepared.dead)
        read += prepared.read
        sent += len(prepared.values)
        dead += len(prepared.dead)
    text = data.replace(b"\r\n", b"\n").removesuffix(b"\r")
    expected_lines = text.count(b"\n") + (0 if text.endswith(b"\n") or not text else 1)
    assert read == sent + dead == expected_lines
