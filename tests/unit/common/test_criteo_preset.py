"""The Criteo preset through the schema's RowParser: a row's values, reasons naming the Criteo
fields, the generated regex agreeing with the reasons, and the columnar parse of random rows."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.common.rows import RowParser
from stages.common.rows_arrow import ArrowRowParser
from stages.common.schema import load_schema

CRITEO = load_schema("criteo")
PARSER = RowParser.for_schema(CRITEO)

GOOD = b"1\t" + b"\t".join([b"5", b"", b"-3"] + [b"7"] * 10) + b"\t" + b"\t".join(
    [b"68fd1e64", b""] + [b"0000abcd"] * 24
)


def test_the_preset_is_label_13_int_26_hex_by_tab_on_the_columnar_parser() -> None:
    assert CRITEO.format.kind == "tsv" and not CRITEO.multi
    assert CRITEO.columns() == ("label", *(f"I{i}" for i in range(1, 14)),
                                *(f"C{i}" for i in range(1, 27)))
    assert {f.type for f in CRITEO.dense} == {"int"}
    assert {f.type for f in CRITEO.categorical} == {"hex"}
    assert isinstance(PARSER, ArrowRowParser)


def test_good_row_parses() -> None:
    assert PARSER.row_error(GOOD) is None
    parsed = PARSER.parse([GOOD, GOOD.replace(b"1\t5", b"0\t6", 1)])
    batch = parsed.raw
    assert not parsed.bad and parsed.good_index.tolist() == [0, 1]
    assert batch.label.tolist() == [1, 0]
    assert batch.dense[0, 0] == 5 and np.isnan(batch.dense[0, 1]) and batch.dense[0, 2] == -3
    assert batch.dense[1, 0] == 6
    assert batch.cat_values[0, 0] == 0x68FD1E64
    assert batch.cat_missing[0, 1] and not batch.cat_missing[0, 0]
    assert parsed.event_ids == [None, None] and parsed.event_time_ms.tolist() == [-1, -1]


def test_reasons_name_the_field() -> None:
    assert PARSER.row_error(b"1\t2") == "expected 40 fields, got 2"
    assert PARSER.row_error(b"2" + GOOD[1:]) == "label must be 0 or 1, got '2'"
    assert PARSER.row_error(GOOD.replace(b"\t-3\t", b"\tx3\t")) == "I3 is not an integer: 'x3'"
    assert PARSER.row_error(GOOD.replace(b"68fd1e64", b"68fd1e6g")) == (
        "C1 is not hex (1 to 8 digits): '68fd1e6g'")
    parsed = PARSER.parse([GOOD, b"1\t2", GOOD])
    assert parsed.good_index.tolist() == [0, 2] and parsed.bad == [(1, "expected 40 fields, got 2")]


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_regex_and_reasons_agree_on_random_bytes(raw: bytes) -> None:
    line = raw.replace(b"\n", b"")
    assert isinstance(PARSER, ArrowRowParser)
    assert (PARSER.valid_row.match(line) is not None) == (PARSER.row_error(line) is None)


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"0", b"1"]),
            st.lists(st.one_of(st.just(b""), st.integers(-(10**9), 10**12).map(lambda i: b"%d" % i)), min_size=13, max_size=13),
            st.lists(st.one_of(st.just(b""), st.integers(0, 2**32 - 1).map(lambda i: b"%08x" % i)), min_size=26, max_size=26),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_columnar_parse_equals_fields(rows: list[tuple[bytes, list[bytes], list[bytes]]]) -> None:
    lines = [b"\t".join([label, *dense, *cats]) for label, dense, cats in rows]
    parsed = PARSER.parse(lines)
    assert not parsed.bad
    batch = parsed.raw
    for i, (label, dense, cats) in enumerate(rows):
        assert batch.label[i] == int(label)
        for j, value in enumerate(dense):
            assert np.isnan(batch.dense[i, j]) if not value else batch.dense[i, j] == int(value)
        for j, value in enumerate(cats):
            assert batch.cat_missing[i, j] == (not value)
            if value:
                assert batch.cat_values[i, j] == int(value, 16)
