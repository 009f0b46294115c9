"""Row parsers by schema: each field kind, JSON paths, headers, every bad-row reason, and the
columnar parser agreeing with the line-by-line one on random rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.common.raw import string_value
from stages.common.rows import DelimitedRowParser, JsonRowParser, RowParser, read_header
from stages.common.rows_arrow import ArrowRowParser
from stages.common.schema import FeatureSchema, SchemaError, load_schema, parse_schema

CRITEO = load_schema("criteo")
ECOMMERCE = load_schema("ecommerce")


def schema(kind: str = "tsv", **extra: Any) -> FeatureSchema:
    """Every field kind: label y, dense n (int) and x (float), categorical h (hex), i (int),
    s (str), multi m (str, max_len 3, separator |), event id and time (s)."""
    data: dict[str, Any] = {
        "name": "kinds", "format": {"kind": kind}, "label": {"name": "y"},
        "event_id": {"name": "eid"}, "event_time": {"name": "t", "unit": "s"},
        "dense": [{"name": "n", "type": "int"}, {"name": "x", "type": "float"}],
        "categorical": [{"name": "h", "type": "hex"}, {"name": "i", "type": "int"},
                        {"name": "s", "type": "str", "path": "a.b.s"}],
        "multi": [{"name": "m", "max_len": 3, "path": "a.m"}],
    }  # fmt: skip
    data.update(extra)
    if kind != "jsonl":
        for field in (*data["categorical"], *data["multi"]):
            field.pop("path", None)
    return parse_schema(data)


TSV = RowParser.for_schema(schema("tsv"))
JSONL = RowParser.for_schema(schema("jsonl"))


def tsv(**cells: str) -> bytes:
    row = {"y": "1", "eid": "src:7", "t": "1700000000", "n": "-3", "x": "2.5", "h": "fF",
           "i": "-1", "s": "shoes", "m": "a|b|c|d"}  # fmt: skip
    row.update(cells)
    return "\t".join(row[c] for c in schema("tsv").columns()).encode()


def js(**values: Any) -> bytes:
    row: dict[str, Any] = {"y": True, "eid": "src:7", "t": 1700000000.25, "n": -3, "x": 2.5,
                           "h": "fF", "i": -1, "a": {"b": {"s": "shoes"}, "m": ["a", "b"]}}
    row.update(values)
    return orjson.dumps(row)


def test_picks_the_parser_of_the_format() -> None:
    assert isinstance(RowParser.for_schema(CRITEO), ArrowRowParser)
    assert isinstance(RowParser.for_schema(ECOMMERCE), JsonRowParser)
    assert isinstance(TSV, DelimitedRowParser) and isinstance(JSONL, JsonRowParser)


def test_every_field_kind_in_a_delimited_row() -> None:
    parsed = TSV.parse([tsv(), tsv(n="", x="", h="", i="", s="", m="", y="0") + b"\r"])
    assert not parsed.bad and parsed.good_index.tolist() == [0, 1]
    raw = parsed.raw
    assert raw.label.tolist() == [1, 0]
    assert raw.dense[0].tolist() == [-3.0, 2.5] and np.isnan(raw.dense[1]).all()
    assert raw.cat_values[0].tolist() == [0xFF, 2**64 - 1, string_value("shoes")]
    assert raw.cat_missing.tolist() == [[False] * 3, [True] * 3]
    abc = [string_value(v) for v in "abc"]
    assert raw.multi_values.tolist() == [abc, [0, 0, 0]] and raw.multi_len.tolist() == [[3], [0]]
    assert parsed.event_ids == ["src:7", "src:7"]
    assert parsed.event_time_ms.tolist() == [1_700_000_000_000] * 2


def test_every_field_kind_in_a_json_row_by_path() -> None:
    empty = js(n=None, x=None, h=None, i=None, a={"b": {}}, y=0)
    parsed = JSONL.parse([js(), js(n=4.0, x=1, y=1), empty])
    assert not parsed.bad
    raw = parsed.raw
    assert raw.label.tolist() == [1, 1, 0]
    assert raw.dense[:2].tolist() == [[-3.0, 2.5], [4.0, 1.0]] and np.isnan(raw.dense[2]).all()
    assert raw.cat_values[0].tolist() == [0xFF, 2**64 - 1, string_value("shoes")]
    assert raw.cat_missing[2].all() and not raw.cat_missing[0].any()
    assert raw.multi_len.tolist() == [[2], [2], [0]]
    assert raw.multi_values[0].tolist() == [string_value("a"), string_value("b"), 0]
    assert parsed.event_time_ms.tolist() == [1_700_000_000_250] * 3  # seconds, floored to ms
    assert JSONL.row_error(js(i=5, a={"b": {"s": 12}})) is None  # str fields take integers
    assert JSONL.parse([js(a={"b": {"s": 12}})]).raw.cat_values[0, 2] == string_value("12")


def test_the_ecommerce_preset_row() -> None:
    line = (b'{"event_id":"web-1:42","ts":1764979200000,"click":1,"user":{"id":"u1",'
            b'"recent_items":["i17","i9"]},"item":{"id":"i512","category":"shoes",'
            b'"price":39.9},"device":"mobile","hour":21}')  # fmt: skip
    parsed = RowParser.for_schema(ECOMMERCE).parse([line])
    assert not parsed.bad and parsed.event_ids == ["web-1:42"]
    assert parsed.raw.dense.tolist() == [[39.9, 21.0]]
    assert parsed.raw.cat_values[0, 3] == string_value("mobile")


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        ({"y": "2"}, "y must be 0 or 1, got '2'"),
        ({"y": ""}, "y must be 0 or 1, got ''"),
        ({"n": "1.5"}, "n is not an integer: '1.5'"),
        ({"x": "abc"}, "x is not a number: 'abc'"),
        ({"x": "nan"}, "x is not a number: 'nan'"),
        ({"h": "123456789"}, "h is not hex (1 to 8 digits): '123456789'"),
        ({"i": "18446744073709551616"}, "i is not a 64-bit integer: '18446744073709551616'"),
        ({"m": "a||b"}, "m has an empty value: 'a||b'"),
        ({"eid": ""}, "eid missing"),
        ({"eid": "abc"}, "eid is not <source>:<seq> (1-32 of [A-Za-z0-9_.-], 1-19 digits): 'abc'"),
        ({"t": "-5"}, "t is not a time in s: '-5'"),
        ({"t": ""}, "t missing"),
    ],
)
def test_delimited_reasons_name_the_field(cells: dict[str, str], reason: str) -> None:
    assert TSV.row_error(tsv(**cells)) == reason
    parsed = TSV.parse([tsv(), tsv(**cells)])
    assert parsed.bad == [(1, reason)] and parsed.good_index.tolist() == [0]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "blank line"),
        (b"\r", "blank line"),
        (b"1\t2", "expected 9 fields, got 2"),
        (b"\xff\t1", "not UTF-8: byte 0xff at offset 0"),
        (b"1\r\t2", "a carriage return inside the row"),
    ],
)
def test_line_reasons(line: bytes, reason: str) -> None:
    assert TSV.row_error(line) == reason


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (js(y=None), "y missing"),
        (js(y=2), "y must be 0 or 1, got '2'"),
        (js(n=1.5), "n is not an integer: '1.5'"),
        (js(n=True), "n is not an integer: 'True'"),
        (js(x="1"), "x is not a number: '1'"),
        (js(h=255), "h is not hex (1 to 8 digits): '255'"),
        (js(i="7"), "i is not a 64-bit integer: '7'"),
        (js(a={"b": {"s": [1]}}), "s is not a string: '[1]'"),
        (js(a={"b": "x"}), "a.b.s: a.b is not an object: 'x'"),
        (js(a={"m": "a|b"}), "m is not a list: 'a|b'"),
        (js(a={"m": ["a", None]}), "m[1] missing"),
        (js(a={"m": ["a", 3.5]}), "m[1] is not a string: '3.5'"),
        (js(eid=None), "eid missing"),
        (js(eid=7), "eid is not a string: '7'"),
        (js(t="now"), "t is not a time in s: 'now'"),
        (js(t=-1), "t is not a time in s: '-1'"),
        (b"{", "not valid JSON: unexpected end of data"),
        (b"[1]", "not a JSON object: '[1]'"),
        (b"", "blank line"),
        (b"\xff", "not UTF-8: byte 0xff at offset 0"),
        (b'{"y":1,\r"eid":"a:1"}', "a carriage return inside the row"),
    ],
)
def test_json_reasons_name_the_field(line: bytes, reason: str) -> None:
    assert JSONL.row_error(line) == reason


def test_multi_keeps_the_first_max_len_values() -> None:
    assert JSONL.parse([js(a={"m": list("abcdef")})]).raw.multi_len.tolist() == [[3]]
    assert TSV.row_error(tsv(m="a|b|c|")) is None  # values after max_len are not looked at


def test_a_header_names_the_columns_and_rows_go_on_the_wire_in_schema_order() -> None:
    headed = schema("csv", format={"kind": "csv", "header": True})
    names = read_header(headed, b"x, y,extra,t,eid,n,h,i,s,m\r\n")
    assert names == ("x", "y", "_", "t", "eid", "n", "h", "i", "s", "m")
    parser = RowParser.for_schema(headed, names)
    line = b"2.5,1,junk,1700000000,src:1,-3,ff,-1,shoes,a|b"
    parsed = parser.parse([line])
    assert not parsed.bad and parsed.raw.dense.tolist() == [[-3.0, 2.5]]
    assert parser.rewrites
    wire = parser.to_wire(line)
    assert wire == b"1,src:1,1700000000,-3,2.5,ff,-1,shoes,a|b"
    plain = RowParser.for_schema(headed)
    assert not plain.rewrites
    again = plain.parse([wire])
    assert np.array_equal(again.raw.cat_values, parsed.raw.cat_values)
    with pytest.raises(SchemaError, match="has no column 'm'"):
        read_header(headed, b"x,y,t,eid,n,h,i,s")
    with pytest.raises(SchemaError, match="names column 'x' twice"):
        read_header(headed, b"x,x,y,t,eid,n,h,i,s,m")


def test_an_ignored_column_and_csv() -> None:
    ignored = parse_schema({
        "name": "ign", "format": {"kind": "csv", "columns": ["_", "y", "v"]},
        "label": {"name": "y"}, "dense": [{"name": "v", "type": "int"}],
    })  # fmt: skip
    parser = RowParser.for_schema(ignored)
    assert isinstance(parser, DelimitedRowParser)
    parsed = parser.parse([b"anything,1,5", b"x,1", b",0,"])
    assert parsed.bad == [(1, "expected 3 fields, got 2")]
    assert parsed.raw.dense[0].tolist() == [5.0] and math.isnan(parsed.raw.dense[1, 0])


# -- the columnar parser agrees with the line-by-line one ----------------------------------------

COLUMNAR = parse_schema({
    "name": "columnar", "format": {"kind": "tsv"}, "label": {"name": "y"},
    "event_id": {"name": "eid"}, "event_time": {"name": "t"},
    "dense": [{"name": "n", "type": "int"}, {"name": "x", "type": "float"}],
    "categorical": [{"name": "h", "type": "hex"}, {"name": "g", "type": "hex"}],
})  # fmt: skip
FAST = RowParser.for_schema(COLUMNAR)
SLOW = DelimitedRowParser(COLUMNAR, COLUMNAR.columns())


def cells() -> st.SearchStrategy[bytes]:
    """Rows near valid ones for COLUMNAR (y, eid, t, n, x, h, g)."""
    digits = st.text("0123456789", min_size=1, max_size=20)
    number = st.from_regex(r"-?([0-9]{1,3}(\.[0-9]{0,3})?|\.[0-9]{1,3})([eE][-+]?[0-9]{1,3})?",
                           fullmatch=True)  # fmt: skip
    junk = st.text("0123456789abcdefABCDEFxg.-+e: \r", max_size=10)
    cell = {
        "y": st.sampled_from(["0", "1", "1", "2", ""]),
        "eid": st.one_of(st.just("s:1"), st.from_regex(r"[a-z]{1,3}:[0-9]{1,3}", fullmatch=True),
                         junk),
        "t": st.one_of(digits, junk),
        "n": st.one_of(st.just(""), digits, digits.map(lambda d: "-" + d), junk),
        "x": st.one_of(st.just(""), number, junk),
        "h": st.one_of(st.just(""), st.text("0123456789abcdefABCDEF", min_size=1, max_size=9),
                       junk),
        "g": st.one_of(st.just(""), st.text("0123456789abcdef", min_size=8, max_size=8)),
    }

    def build(values: list[str], tail: str) -> bytes:
        return ("\t".join(values) + tail).encode()

    return st.builds(build, st.tuples(*[cell[c] for c in COLUMNAR.columns()]).map(list),
                     st.sampled_from(["", "", "\r", "\t", "x"]))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(cells(), min_size=1, max_size=12))
def test_the_columnar_parser_equals_the_line_parser(lines: list[bytes]) -> None:
    assert isinstance(FAST, ArrowRowParser)
    fast, slow = FAST.parse(lines), SLOW.parse(lines)
    assert fast.good_index.tolist() == slow.good_index.tolist()
    assert fast.bad == slow.bad
    assert fast.event_ids == slow.event_ids
    assert fast.event_time_ms.tolist() == slow.event_time_ms.tolist()
    a, b = fast.raw, slow.raw
    assert a.label.tolist() == b.label.tolist()
    assert np.array_equal(a.dense, b.dense, equal_nan=True)
    assert a.cat_values.tolist() == b.cat_values.tolist()
    assert a.cat_missing.tolist() == b.cat_missing.tolist()


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=60), max_size=8))
def test_parsers_never_raise_on_random_bytes(lines: list[bytes]) -> None:
    for parser in (TSV, JSONL, FAST, RowParser.for_schema(CRITEO)):
        parsed = parser.parse(lines)
        assert len(parsed) + len(parsed.bad) == len(lines)
        assert all(reason for _, reason in parsed.bad)
        assert [parser.row_error(lines[i]) is None for i in parsed.good_index.tolist()] == [
            True
        ] * len(parsed)


@settings(max_examples=100, deadline=None)
@given(
    label=st.sampled_from([0, 1, True, False]),
    price=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**17, 10**17)),
    user=st.one_of(st.none(), st.text(max_size=20), st.integers(0, 10**12)),
    recent=st.one_of(st.none(), st.lists(st.text(min_size=1, max_size=5), max_size=8)),
)
def test_json_rows_of_the_ecommerce_preset(label: Any, price: Any, user: Any, recent: Any) -> None:
    row = {"event_id": "w:1", "ts": 5, "click": label, "hour": 3,
           "user": {"id": user, "recent_items": recent}, "item": {"price": price}}
    parsed = RowParser.for_schema(ECOMMERCE).parse([orjson.dumps(row)])
    assert not parsed.bad
    assert parsed.raw.label.tolist() == [int(label)]
    got = parsed.raw.dense[0, 0]
    assert (math.isnan(got) if price is None else got == float(price))
    assert parsed.raw.cat_missing[0, 0] == (user is None)
    if user is not None:
        assert parsed.raw.cat_values[0, 0] == string_value(str(user))
    assert parsed.raw.multi_len.tolist() == [[min(len(recent or []), 5)]]


def test_validation_only_parsers_accept_the_same_rows_without_hashing() -> None:
    lines = [js(), js(y=2), js(a={"b": {"s": 5}, "m": ["a", 3]}), b"{"]
    checking = RowParser.for_schema(schema("jsonl"), hash_strings=False)
    full, checked = JSONL.parse(lines), checking.parse(lines)
    assert checked.bad == full.bad and checked.good_index.tolist() == full.good_index.tolist()
    assert checked.raw.cat_values[:, 2].tolist() == [0, 0] and checked.raw.multi_values.sum() == 0
    assert checked.raw.cat_values[:, :2].tolist() == full.raw.cat_values[:, :2].tolist()
