"""rowcheck.surely_valid: never True for a row the schema's row pattern rejects, True for the
usual rows of the Criteo layout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.common.rows_arrow import ArrowRowParser
from stages.common.schema import load_schema, parse_schema
from stages.ingest.core.lines import LineBatch
from stages.ingest.core.rowcheck import surely_valid
from stages.ingest.core.synthetic import SyntheticConfig, generate_rows
from stages.ingest.core.validate import RowValidator, fast_valid, rowcheck_layout, separated_lines

VALIDATOR = RowValidator.for_schema(load_schema("criteo"))
assert VALIDATOR.fast is not None and isinstance(VALIDATOR.parser, ArrowRowParser)
FAST, VALID_ROW = VALIDATOR.fast, VALIDATOR.parser.valid_row

ROWS = generate_rows(SyntheticConfig(seed=7), 0, 200).rows
GOOD = ROWS[0]
FIELDS = GOOD.split(b"\t")


def check(lines: list[bytes]) -> tuple[list[bool], list[bool], list[bool]]:
    """(surely_valid, fast_valid, VALID_ROW) of the lines, as one batch."""
    lengths = [len(line) + 1 for line in lines]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    batch = LineBatch(b"".join(line + b"\n" for line in lines), offsets, 1)
    sure = surely_valid(batch.data, batch.offsets, 13, 26).tolist()
    fast = fast_valid(separated_lines(batch), batch, FAST).tolist()
    return sure, fast, [bool(VALID_ROW.match(line)) for line in lines]


def row(label: bytes, dense: list[bytes], cats: list[bytes]) -> bytes:
    return b"\t".join([label, *dense, *cats])


DENSE, CATS = FIELDS[1:14], FIELDS[14:]


@pytest.mark.parametrize(
    ("line", "sure", "valid"),
    [
        (GOOD, True, True),
        (row(b"1", [b""] * 13, [b""] * 26), True, True),
        (row(b"0", [b"123456789012345678"] * 13, [b"00000000"] * 26), False, True),  # > window
        (row(b"0", [b"-1", b"123456789012345678", *DENSE[2:]], CATS), True, True),
        (row(b"0", [b"-12345678901234567", *DENSE[1:]], CATS), True, True),
        (row(b"0", [b"-123456789012345678", *DENSE[1:]], CATS), False, True),  # 19 bytes
        (row(b"0", [b"1234567890123456789", *DENSE[1:]], CATS), False, False),
        (row(b"0", [b"-", *DENSE[1:]], CATS), False, False),
        (row(b"0", [b"--1", *DENSE[1:]], CATS), False, False),
        (row(b"0", [b"1-1", *DENSE[1:]], CATS), False, False),
        (row(b"0", [b"-a", *DENSE[1:]], CATS), False, False),
        (row(b"0", [b"1a", *DENSE[1:]], CATS), False, False),
        (row(b"0", DENSE, [b"-1234567", *CATS[1:]]), False, False),
        (row(b"0", DENSE, [b"1234567", *CATS[1:]]), False, True),  # 1 to 8 digits
        (row(b"0", DENSE, [b"1", *CATS[1:]]), False, True),
        (row(b"0", DENSE, [b"123456789", *CATS[1:]]), False, False),
        (row(b"0", DENSE, [b"ABCDEF12", *CATS[1:]]), False, True),  # either case
        (row(b"0", DENSE, [b"ABCDEFG2", *CATS[1:]]), False, False),
        (row(b"0", DENSE, [*CATS[:-1], b"abcdef1"]), False, True),
        (row(b"0", DENSE, [*CATS[:-1], b"abcdef123"]), False, False),
        (row(b"0", DENSE, CATS[:-1]), False, False),
        (row(b"0", DENSE, [*CATS, b""]), False, False),
        (row(b"0", [*DENSE[:-1], b"a29730c1"], CATS), False, False),  # a hex id, one early
        (row(b"0", DENSE, [*CATS[1:], b"-12"]), False, False),  # a dense value, one late
        (row(b"2", DENSE, CATS), False, False),
        (row(b"01", DENSE, CATS), False, False),
        (row(b"", DENSE, CATS), False, False),
        (GOOD + b"\r", False, True),
        (GOOD + b"\r\r", False, False),
        (GOOD.replace(b"\t", b"\t\r", 1), False, False),
        (GOOD + b" ", False, False),
        (b"\xff" + GOOD[1:], False, False),
        (b"", False, False),
        (b"0", False, False),
    ],
)
def test_cases(line: bytes, sure: bool, valid: bool) -> None:
    assert bool(VALID_ROW.match(line)) is valid  # the expectation itself
    got_sure, got_fast, _ = check([GOOD, line, GOOD])
    assert got_sure == [True, sure, True]
    assert got_fast == [True, valid, True]


def near_rows() -> st.SearchStrategy[bytes]:
    """Rows built field by field, most of them valid or one step away from it."""
    digits = st.text("0123456789", min_size=1, max_size=19)
    dense = st.one_of(
        st.just(""), digits, digits.map(lambda d: "-" + d), st.text("0123456789-ab", max_size=4)
    )
    cat = st.one_of(
        st.just(""),
        st.text("0123456789abcdef", min_size=8, max_size=8),
        st.text("0123456789abcdefA-", min_size=7, max_size=9),
    )
    label = st.sampled_from(["0", "1", "0", "1", "2", "", "00", "-1"])

    def build(lab: str, d: list[str], c: list[str], tail: str) -> bytes:
        return ("\t".join([lab, *d, *c]) + tail).encode()

    return st.builds(
        build,
        label,
        st.lists(dense, min_size=12, max_size=14),
        st.lists(cat, min_size=25, max_size=27),
        st.sampled_from(["", "", "", "\r", "\t", "x"]),
    )


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(st.one_of(near_rows(), st.sampled_from(ROWS)), min_size=1, max_size=30))
def test_never_true_for_a_rejected_row(lines: list[bytes]) -> None:
    sure, fast, valid = check(lines)
    assert all(v for s, v in zip(sure, valid) if s)
    assert fast == valid


def test_generated_rows_are_all_decided_and_scratch_is_reused_safely() -> None:
    many = generate_rows(SyntheticConfig(seed=8), 0, 5000).rows
    assert all(check(many)[0])
    sure, _, valid = check([b"oops", *ROWS[:3]])  # a smaller batch after a larger one
    assert sure == valid == [False, True, True, True]


def test_empty_batch() -> None:
    assert surely_valid(b"", np.zeros(1, dtype=np.int64), 13, 26).shape == (0,)


def test_rowcheck_is_used_only_for_its_layout_and_follows_the_counts() -> None:
    small = parse_schema({
        "name": "small", "format": {"kind": "tsv"}, "label": {"name": "y"},
        "dense": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
        "categorical": [{"name": "c", "type": "hex"}],
    })  # fmt: skip
    assert rowcheck_layout(small) == (2, 1) and rowcheck_layout(load_schema("criteo")) == (13, 26)
    lines = [b"1\t5\t-3\tabcdef01", b"1\t5\t\t", b"1\t5\tabcdef01", b"1\t5\t3\tabcdef01\t"]
    offsets = np.cumsum([0] + [len(line) + 1 for line in lines]).astype(np.int64)
    data = b"".join(line + b"\n" for line in lines)
    assert surely_valid(data, offsets, 2, 1).tolist() == [True, True, False, False]
    floats = parse_schema({
        "name": "floats", "format": {"kind": "tsv"}, "label": {"name": "y"},
        "dense": [{"name": "a", "type": "float"}], "categorical": [{"name": "c", "type": "hex"}],
    })  # fmt: skip
    assert rowcheck_layout(floats) is None
    fast = RowValidator.for_schema(floats).fast
    assert fast is not None and fast.layout is None
    batch = LineBatch(b"1\t2.5\tff\n0\tx\tff\n", np.array([0, 9, 16], np.int64), 1)
    assert fast_valid(separated_lines(batch), batch, fast).tolist() == [True, False]
