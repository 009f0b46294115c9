"""Prediction request parsing for the Criteo preset: accepted forms, the array parser against
the schema's RowParser, and the 4xx reasons."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.common.layout import Transform, compile_layout
from stages.common.schema import load_schema
from stages.publish.core.invocations import csv_invocation, json_invocation
from stages.publish.core.requests import (
    ModelInputs, RequestError, RequestParser, json_to_inputs, text_to_inputs,
)
from stages.publish.core.text_rows import (
    digits8_words, hex8_words, parse_body, parse_few, text_layout,
)
from stages.publish.synthetic import criteo_rows

SCHEMA = load_schema("criteo")
PARSER = RequestParser(SCHEMA)
LAYOUT = text_layout(SCHEMA)
DENSE_NAMES = tuple(f.name for f in SCHEMA.dense)
CAT_NAMES = tuple(f.name for f in SCHEMA.categorical)
ROWS = criteo_rows(5, np.random.default_rng(0))


def _text(body: bytes, max_rows: int) -> ModelInputs:
    return text_to_inputs(body, max_rows, PARSER)


def _json(body: bytes, max_rows: int) -> ModelInputs:
    return json_to_inputs(body, max_rows, PARSER)


def test_the_criteo_preset_takes_the_array_parser() -> None:
    assert LAYOUT is not None and (LAYOUT.n_dense, LAYOUT.n_cats) == (13, 26)
    assert text_layout(load_schema("ecommerce")) is None


def test_labelled_and_unlabelled_rows_give_the_same_inputs() -> None:
    parsed = PARSER.row_parser.parse([r.encode() for r in ROWS])
    transform = Transform(SCHEMA, compile_layout(SCHEMA, 8))
    labelled = _text("\n".join(ROWS).encode() + b"\n\n", 10)
    unlabelled = _text("\r\n".join(r.split("\t", 1)[1] for r in ROWS).encode(), 10)
    for got in (labelled, unlabelled):
        np.testing.assert_array_equal(got.dense, transform.dense(parsed.raw))
        np.testing.assert_array_equal(got.ids, transform.ids(parsed.raw))
    assert labelled.has_label.all() and not unlabelled.has_label.any()
    np.testing.assert_array_equal(labelled.label, parsed.raw.label)


def test_json_rows_and_instances() -> None:
    expected = _text("\n".join(ROWS).encode(), 10)
    by_rows = _json(json.dumps({"rows": ROWS}).encode(), 10)
    instances = []
    for row in ROWS:
        fields = row.split("\t")
        inst: dict[str, object] = {"label": int(fields[0])}
        for name, value in zip(DENSE_NAMES + CAT_NAMES, fields[1:]):
            if value:
                inst[name] = int(value) if name.startswith("I") else value
        instances.append(inst)
    by_instances = _json(json.dumps({"instances": instances}).encode(), 10)
    for got in (by_rows, by_instances):
        np.testing.assert_array_equal(got.ids, expected.ids)
        np.testing.assert_array_equal(got.dense, expected.dense)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"1\t2\t3", 422, "row 1: "),
        ("\n".join([ROWS[0], ROWS[1].replace("\t", "\tx", 1)]).encode(), 422, "row 2: "),
        (("2" + ROWS[0][1:]).encode(), 422, "row 1: "),
        (b"\n\n", 422, "no rows in the request"),
        ("\n".join(ROWS * 3).encode(), 413, "too many rows: 11"),
    ],
)
def test_text_errors(body: bytes, status: int, message: str) -> None:
    with pytest.raises(RequestError) as err:
        _text(body, 10)
    assert err.value.status == status and message in str(err.value)


def test_a_bad_value_is_named() -> None:
    bad = ROWS[1].split("\t")
    bad[1] = "x"
    with pytest.raises(RequestError, match="row 2: .*I1"):
        _text("\n".join([ROWS[0], "\t".join(bad)]).encode(), 10)


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"rows": [], "instances": []}', 400, '"rows" or "instances"'),
        (b'{"rows": "abc"}', 400, "must be a list"),
        (b'{"rows": [1, 2]}', 422, "list of strings"),
        (b'{"instances": [{"I1": 1.5}]}', 422, "record 1: I1 must be an integer, got 1.5"),
        (b'{"instances": [{"I1": true}]}', 422, "record 1: I1 must be a number"),
        (b'{"instances": [{"X9": 1}]}', 422, "unknown field 'X9'"),
        (b'{"instances": [{}, {"C1": "ZZ"}]}', 422, "record 2: C1 must be a string of 1 to 8 hex"),
        (b'{"instances": [5]}', 422, "record 1 is not an object"),
    ],
)
def test_json_errors(payload: bytes, status: int, message: str) -> None:
    with pytest.raises(RequestError) as err:
        _json(payload, 10)
    assert err.value.status == status and message in str(err.value)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=400) | st.text(alphabet="0123456789abcdef\t\n-x", max_size=400)
       .map(str.encode))
def test_arbitrary_bodies_give_inputs_or_a_request_error(body: bytes) -> None:
    for parse in (_text, _json):
        try:
            out = parse(body, 50)
        except RequestError as exc:
            assert 400 <= exc.status < 500
        else:
            assert 0 < len(out) <= 50 and out.ids.dtype == np.uint64


def test_instances_with_only_missing_values_are_valid() -> None:
    out = _text(b"\t" * 38, 1)
    assert len(out) == 1 and not out.dense.any()


_INT_FIELD = st.one_of(st.just(""), st.integers(-(10**18) + 1, 10**18 - 1).map(str),
                       st.integers(0, 999).map(str), st.sampled_from(["-0", "-007", "00"]))
_CAT_FIELD = st.one_of(st.just(""), st.integers(0, 2**32 - 1).map(lambda v: f"{v:08x}"))


# at most 8 digits: the bodies the array parser reads eight characters at once
_SHORT_INT_FIELD = st.one_of(st.just(""), st.integers(-(10**8) + 1, 10**8 - 1).map(str),
                             st.sampled_from(["-0", "-007", "00", "-1", "99999999"]))


@st.composite
def _valid_row(draw: st.DrawFn, ints: st.SearchStrategy[str] = _INT_FIELD) -> str:
    fields = [draw(ints) for _ in DENSE_NAMES] + [draw(_CAT_FIELD) for _ in CAT_NAMES]
    if draw(st.booleans()):
        fields.insert(0, draw(st.sampled_from(["0", "1"])))
    return "\t".join(fields) + draw(st.sampled_from(["", "\r"]))


@settings(max_examples=150, deadline=None)
@given(rows=st.one_of(st.lists(_valid_row(), min_size=1, max_size=8),
                      st.lists(_valid_row(_SHORT_INT_FIELD), min_size=1, max_size=8)),
       trailer=st.sampled_from(["", "\n", "\n\n"]))
def test_the_fast_parsers_equal_the_row_parser(rows: list[str], trailer: str) -> None:
    body = ("\n".join(rows) + trailer).encode()
    assert LAYOUT is not None
    slow = PARSER.rows(body.split(b"\n"), 100)
    for fast in (parse_body(body, LAYOUT), parse_few(body, LAYOUT)):
        assert fast is not None
        np.testing.assert_array_equal(fast.has_label, slow.has_label)
        for name in ("dense", "cat_values", "cat_missing", "label", "multi_values",
                     "multi_len"):
            got, want = getattr(fast.raw, name), getattr(slow.raw, name)
            assert got.dtype == want.dtype and got.shape == want.shape, name
            np.testing.assert_array_equal(got, want, err_msg=name)
    few, whole = parse_few(body, LAYOUT), parse_body(body, LAYOUT)
    assert few is not None and whole is not None  # and "-0" is 0.0 in both, not -0.0 in one
    np.testing.assert_array_equal(np.signbit(few.raw.dense), np.signbit(whole.raw.dense))


@pytest.mark.parametrize("body", [
    b"1\t2", b"2" + b"\t" * 39, b"1\t-" + b"\t" * 38, b"1\t1x" + b"\t" * 38,
    b"1" + b"\t" * 14 + b"ABCDEF01" + b"\t" * 25, b"1" + b"\t" * 14 + b"abc" + b"\t" * 25,
    b"1\t" + b"1" * 19 + b"\t" * 38, b"\n\n",
])
def test_the_fast_parsers_leave_bad_bodies_to_the_per_row_path(body: bytes) -> None:
    assert LAYOUT is not None
    assert parse_body(body, LAYOUT) is None and parse_few(body, LAYOUT) is None


def test_invocation_forms_give_the_same_columns() -> None:
    want = _text("\n".join(ROWS).encode(), 10)
    names = [*DENSE_NAMES, *CAT_NAMES]
    cells = [[v or None for v in r.split("\t")[1:]] for r in ROWS]
    typed = [[None if v is None else (int(v) if n[0] == "I" else v)
              for n, v in zip(names, row)] for row in cells]
    bodies = [
        {"dataframe_split": {"columns": names, "data": typed}},
        {"dataframe_records": [dict(zip(names, row)) for row in typed]},
        {"instances": {n: [row[j] for row in typed] for j, n in enumerate(names)}},
        {"inputs": ROWS},
        {"dataframe_split": {"columns": ["row"], "data": [[r] for r in ROWS]}},
    ]
    for body in bodies:
        got = PARSER.inputs(json_invocation(json.dumps(body).encode(), 10, PARSER))
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.dense, want.dense)
    header = ",".join(names)
    csv_body = "\n".join([header] + [",".join(v or "" for v in row) for row in cells])
    got = PARSER.inputs(csv_invocation(csv_body.encode(), 10, PARSER))
    np.testing.assert_array_equal(got.ids, want.ids)


@pytest.mark.parametrize(("payload", "status", "message"), [
    (b"[1]", 400, "must be an object"),
    (b'{"inputs": [], "params": {"k": 1}}', 400, "no params"),
    (b'{"dataframe_split": {"columns": ["I1"]}}', 400, '"data"'),
    (b'{"dataframe_split": {"columns": ["I1"], "data": [[1, 2]]}}', 422, "list of 1 values"),
    (b'{"dataframe_records": [5]}', 422, "record 1 is not an object"),
    (b'{"inputs": {"I1": [1], "I2": [1, 2]}}', 422, "same length"),
    (b'{"dataframe_records": [{"I1": "x"}]}', 422, "record 1: I1 must be a number, got 'x'"),
    (b'{"dataframe_records": [{"I1": true}]}', 422, "I1 must be"),
    (b'{"dataframe_records": [{"row": "1", "I1": 3}]}', 422, "either 'row'"),
    (b'{"inputs": []}', 422, "no rows"),
])
def test_invocation_errors(payload: bytes, status: int, message: str) -> None:
    with pytest.raises(RequestError) as err:
        json_invocation(payload, 10, PARSER)
    assert err.value.status == status and message in str(err.value)


def _word(text: bytes) -> np.ndarray:
    return np.frombuffer(text, dtype="<u8").copy()


def test_eight_hex_digits_at_once_read_every_value_and_refuse_every_other_byte() -> None:
    values = np.random.default_rng(3).integers(0, 2**32, 10_000, dtype=np.uint64)
    text = b"".join(b"%08x" % int(v) for v in values)
    np.testing.assert_array_equal(hex8_words(_word(text)), values)
    for extreme in (b"00000000", b"ffffffff", b"0000000f", b"f0000000"):
        assert hex8_words(_word(extreme))[0] == int(extreme, 16)  # type: ignore[index]
    hex_digits = set(b"0123456789abcdef")
    for position in range(8):
        for byte in range(256):
            text = bytearray(b"19af20be")
            text[position] = byte
            got = hex8_words(_word(bytes(text)))
            if byte in hex_digits:
                assert got is not None and got[0] == int(bytes(text), 16)
            else:
                assert got is None, (position, byte)


def test_up_to_eight_digits_at_once_read_every_length_and_refuse_every_other_byte() -> None:
    rng = np.random.default_rng(4)
    for n in range(1, 9):
        values = rng.integers(0, 10**n, 2_000)
        texts = [b"%0*d" % (n, v) for v in values]  # leading zeros too
        words = np.array([int.from_bytes((t + b"\t-x\xff\x00\x00\x00\x00")[:8], "little")
                          for t in texts], np.uint64)  # whatever follows the field is ignored
        np.testing.assert_array_equal(digits8_words(words, np.full(len(texts), n)), values)
    for position in range(8):
        for byte in range(256):
            text = bytearray(b"90817263")
            text[position] = byte
            got = digits8_words(_word(bytes(text)), np.array([8]))
            if chr(byte).isdigit() and byte < 128:
                assert got is not None and got[0] == int(bytes(text)), (position, byte)
            else:
                assert got is None, (position, byte)
