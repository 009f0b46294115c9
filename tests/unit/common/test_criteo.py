import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stages.common.criteo import VALID_ROW, parse_valid_rows, row_error

GOOD = b"1\t" + b"\t".join([b"5", b"", b"-3"] + [b"7"] * 10) + b"\t" + b"\t".join(
    [b"68fd1e64", b""] + [b"0000abcd"] * 24
)


def test_good_row_parses() -> None:
    assert row_error(GOOD) is None
    batch = parse_valid_rows([GOOD, GOOD.replace(b"1\t5", b"0\t6", 1)])
    assert batch.label.tolist() == [1, 0]
    assert batch.dense[0, 0] == 5 and np.isnan(batch.dense[0, 1]) and batch.dense[0, 2] == -3
    assert batch.dense[1, 0] == 6
    assert batch.cats[0, 0] == 0x68FD1E64 and batch.cat_missing[0, 1] and not batch.cat_missing[0, 0]


def test_reasons_name_the_field() -> None:
    assert row_error(b"1\t2") == "expected 40 fields, got 2"
    assert row_error(b"2" + GOOD[1:]) == "label must be 0 or 1, got '2'"
    assert row_error(GOOD.replace(b"\t-3\t", b"\tx3\t")) == "I3 is not an integer: 'x3'"
    assert row_error(GOOD.replace(b"68fd1e64", b"68FD1E64")).startswith("C1 is not 8 lowercase hex")


@given(st.binary(max_size=300))
def test_regex_and_reasons_agree_on_random_bytes(raw: bytes) -> None:
    line = raw.replace(b"\n", b"")
    assert (VALID_ROW.match(line) is not None) == (row_error(line) is None)


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
    assert all(row_error(line) is None for line in lines)
    batch = parse_valid_rows(lines)
    for i, (label, dense, cats) in enumerate(rows):
        assert batch.label[i] == int(label)
        for j, value in enumerate(dense):
            assert np.isnan(batch.dense[i, j]) if not value else batch.dense[i, j] == int(value)
        for j, value in enumerate(cats):
            assert batch.cat_missing[i, j] == (not value)
            if value:
                assert batch.cats[i, j] == int(value, 16)
