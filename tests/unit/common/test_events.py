"""The event record (version 2): round trips for a columnar and a JSON schema, and refusals."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from stages.common.events import (
    decode_events,
    default_parser,
    encode_event,
    event_error,
    event_id,
)
from stages.common.rows import RowParser
from stages.common.rows_arrow import ArrowRowParser
from stages.common.schema import load_schema

CRITEO = load_schema("criteo")
ECOMMERCE = load_schema("ecommerce")
SHOP = RowParser.for_schema(ECOMMERCE)
GOOD = b"1\t" + b"\t".join([b"5", b"", b"-3"] + [b"7"] * 10) + b"\t" + b"\t".join(
    [b"68fd1e64", b""] + [b"0000abcd"] * 24
)


def shop_row(i: int, **change: object) -> bytes:
    row = {"event_id": f"web:{i}", "ts": 1_700_000_000_000 + i, "click": i % 2,
           "user": {"id": f"u{i}", "recent_items": ["i1", "i2"]},
           "item": {"id": "i9", "category": "shoes", "price": 9.5}, "device": "mobile", "hour": 3}
    row.update(change)
    return orjson.dumps(row)


def test_event_round_trip_and_bad_records() -> None:
    assert isinstance(default_parser(), ArrowRowParser)
    assert default_parser().schema.schema_hash == CRITEO.schema_hash
    values = [encode_event(event_id("src", i), 1_700_000_000_000 + i, GOOD) for i in range(3)]
    assert values[0].startswith(b"2\t" + CRITEO.schema_hash.encode() + b"\tsrc:0\t")
    values.insert(1, b"garbage")
    values.append(b"1\tsrc:9\t1\t" + GOOD)  # version 1: before feature schemas
    values.append(encode_event("src:10", 1, GOOD, "0123456789abcdef"))
    decoded = decode_events(values)
    assert decoded.events.event_ids == ["src:0", "src:1", "src:2"]
    assert decoded.good_index.tolist() == [0, 2, 3]
    assert [b.index for b in decoded.bad] == [1, 4, 5]
    assert decoded.bad[1].reason == "event record version '1', this build reads version 2"
    assert decoded.bad[2].reason == (
        f"event of feature schema '0123456789abcdef', this stage runs {CRITEO.schema_id}"
    )
    assert decoded.events.rows.cat_values[0, 0] == 0x68FD1E64
    assert event_error(values[0]) is None


def test_decoder_agrees_with_event_error_on_edge_cases() -> None:
    ok = encode_event("s:1", 5, GOOD)
    values = [
        ok,
        ok + b"\n",
        ok + b"\r",
        ok.replace(b"\t5\t", b"\t9999999999999999999\t", 1),
        ok.replace(b"s:1", b"s 1", 1),
        b"",
        b"2\t\t\t\t",
        ok.replace(b"\t68fd1e64\t", b"\txyz\t", 1),
    ]
    decoded = decode_events(values)
    assert decoded.good_index.tolist() == [0]
    assert all(event_error(values[b.index]) for b in decoded.bad)
    assert decoded.bad[-1].reason == "bad row: C1 is not hex (1 to 8 digits): 'xyz'"
    assert decoded.events.event_time_ms.tolist() == [5]


def test_json_events_round_trip_and_bad_rows_name_the_field() -> None:
    rows = [shop_row(0), shop_row(1, click=7), shop_row(2, item={"price": "cheap"}), shop_row(3)]
    values = [encode_event(f"web:{i}", 100 + i, r, ECOMMERCE.schema_hash) for i, r in enumerate(rows)]
    values.append(encode_event("web:9", 1, shop_row(9), CRITEO.schema_hash))
    decoded = decode_events(values, SHOP)
    assert decoded.good_index.tolist() == [0, 3]
    assert decoded.events.event_ids == ["web:0", "web:3"]
    assert decoded.events.event_time_ms.tolist() == [100, 103]
    assert decoded.events.rows.multi_len.tolist() == [[2], [2]]
    assert [(b.index, b.reason) for b in decoded.bad] == [
        (1, "bad row: click must be 0 or 1, got '7'"),
        (2, "bad row: price is not a number: 'cheap'"),
        (4, f"event of feature schema '{CRITEO.schema_hash}', this stage runs "
            f"{ECOMMERCE.schema_id}"),
    ]
    assert event_error(values[1], SHOP) == decoded.bad[0].reason
    criteo_record = encode_event("s:1", 5, GOOD)
    assert "this stage runs ecommerce@" in (event_error(criteo_record, SHOP) or "")


@given(st.lists(st.binary(max_size=80), max_size=10), st.lists(st.booleans(), max_size=10))
def test_decoder_never_raises_and_counts_add_up(noise: list[bytes], keep: list[bool]) -> None:
    for parser, row in ((default_parser(), GOOD), (SHOP, shop_row(1))):
        schema_hash = parser.schema.schema_hash
        values = [encode_event(f"s:{i}", i, row, schema_hash) if k else n
                  for i, (n, k) in enumerate(zip(noise, keep))]
        decoded = decode_events(values, parser)
        assert len(decoded.events) + len(decoded.bad) == len(values)
        indices = [*decoded.good_index.tolist(), *[b.index for b in decoded.bad]]
        assert sorted(indices) == list(range(len(values)))
        assert all(event_error(values[i], parser) is None for i in decoded.good_index.tolist())
        assert all(event_error(values[b.index], parser) for b in decoded.bad)
