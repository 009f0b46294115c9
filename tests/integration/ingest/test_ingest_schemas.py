"""Ingest by feature schema against the real broker: JSON lines of the ecommerce preset (file
and generator) and a CSV file with a header line, good rows as events, bad rows as dead letters
with reasons naming the field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from stages.common.dead_letter import DeadLetterRecord, FilePosition
from stages.common.events import decode_events
from stages.common.rows import RowParser
from stages.common.schema import load_schema
from stages.common.settings import CommonSettings, load_settings
from stages.ingest.run import run_ingest
from stages.ingest.settings import IngestSettings

ReadTopic = Callable[[str, str], list[tuple[bytes, bytes]]]

pytestmark = pytest.mark.integration
FAST = load_settings(IngestSettings, linger_ms=5, progress_interval_s=60)


def shop_event(i: int, **change: object) -> bytes:
    event = {
        "event_id": f"web-1:{i}", "ts": 1_764_979_200_000 + 1000 * i, "click": i % 2,
        "user": {"id": f"u{i % 7}", "recent_items": [f"i{i % 3}", "i9"]},
        "item": {"id": f"i{i}", "category": "shoes", "price": 10.0 + i},
        "device": "mobile", "hour": i % 24,
    }  # fmt: skip
    event.update(change)
    return orjson.dumps(event)


BAD_EVENTS = {
    3: (shop_event(3, click="yes"), "click must be 0 or 1, got 'yes'"),
    5: (shop_event(5, item={"id": "i5", "price": "cheap"}), "price is not a number: 'cheap'"),
    7: (shop_event(7, event_id=None), "event_id missing"),
    8: (shop_event(8, ts="today"), "ts is not a time in ms: 'today'"),
    10: (b'{"click": 1, "user": ', "not valid JSON"),
    12: (shop_event(12, user={"recent_items": "i1|i2"}), "recent_items is not a list: 'i1|i2'"),
}


def test_an_ecommerce_json_file_sends_events_and_dead_letters_with_reasons(
    tmp_path: Path, make_settings: Callable[..., CommonSettings], read_topic: ReadTopic
) -> None:
    common = make_settings("kafka", feature_schema="ecommerce")
    lines = [BAD_EVENTS[n][0] if n in BAD_EVENTS else shop_event(n) for n in range(1, 21)]
    path = tmp_path / "shop.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = run_ingest(common, FAST, path, progress=False)
    assert (summary.read, summary.sent, summary.dead_lettered, summary.failed) == (20, 14, 6, 0)

    events = read_topic(common.kafka_bootstrap, common.topic_events)
    good = [n for n in range(1, 21) if n not in BAD_EVENTS]
    assert sorted(k for k, _ in events) == sorted(b"web-1:%d" % n for n in good)
    decoded = decode_events([v for _, v in events], RowParser.for_schema(load_schema("ecommerce")))
    assert not decoded.bad
    by_id = dict(zip(decoded.events.event_ids, decoded.events.event_time_ms.tolist()))
    assert by_id == {f"web-1:{n}": 1_764_979_200_000 + 1000 * n for n in good}  # the ts field
    assert sorted(decoded.events.rows.dense[:, 0].tolist()) == [10.0 + n for n in good]

    letters = [DeadLetterRecord.parse(v) for _, v in read_topic(
        common.kafka_bootstrap, common.topic_events_dlq)]  # fmt: skip
    at = {d.position.line: d for d in letters if isinstance(d.position, FilePosition)}
    assert sorted(at) == sorted(BAD_EVENTS)
    for line, letter in at.items():
        assert letter.reason.startswith(BAD_EVENTS[line][1]), letter.reason
        assert letter.raw == BAD_EVENTS[line][0]


def test_the_ecommerce_generator_through_ingest_decodes_cleanly(
    make_settings: Callable[..., CommonSettings], read_topic: ReadTopic
) -> None:
    common = make_settings("kafka", feature_schema="ecommerce")
    summary = run_ingest(common, FAST, "synthetic", limit=500, progress=False)
    assert (summary.read, summary.sent, summary.dead_lettered) == (500, 500, 0)
    values = [v for _, v in read_topic(common.kafka_bootstrap, common.topic_events)]
    decoded = decode_events(values, RowParser.for_schema(load_schema("ecommerce")))
    assert len(decoded.events) == 500 and not decoded.bad
    assert all(i.startswith("ecom0-") for i in decoded.events.event_ids)
    criteo = decode_events(values)  # the default (Criteo) schema refuses them, naming both
    assert not len(criteo.events) and "this stage runs criteo@" in criteo.bad[0].reason


def test_a_csv_file_with_a_header_line(
    tmp_path: Path, make_settings: Callable[..., CommonSettings], read_topic: ReadTopic
) -> None:
    spec = tmp_path / "shop.yaml"
    spec.write_text(
        "name: headed\nformat: {kind: csv, header: true}\nlabel: {name: clicked}\n"
        "dense: [{name: price}]\ncategorical: [{name: shop}]\n"
        "multi: [{name: tags, max_len: 3, separator: ';'}]\n"
    )
    common = make_settings("kafka", feature_schema=str(spec))
    path = tmp_path / "shop.csv"
    path.write_bytes(b"tags,shop,note,price,clicked\r\na;b,acme,hi,2.5,1\r\n,bolt,,x,0\r\n"
                     b",,,,1\r\n")  # fmt: skip
    summary = run_ingest(common, FAST, path, progress=False)
    assert (summary.read, summary.sent, summary.dead_lettered) == (3, 2, 1)
    events = read_topic(common.kafka_bootstrap, common.topic_events)
    rows = sorted(v.split(b"\t", 4)[4] for _, v in events)
    assert rows == [b"1,,,", b"1,2.5,acme,a;b"]  # the wire order: label, price, shop, tags
    decoded = decode_events([v for _, v in events], RowParser.for_schema(common.schema()))
    assert not decoded.bad and sorted(decoded.events.rows.multi_len[:, 0].tolist()) == [0, 2]
    (letter,) = [DeadLetterRecord.parse(v) for _, v in read_topic(
        common.kafka_bootstrap, common.topic_events_dlq)]  # fmt: skip
    assert letter.reason == "price is not a number: 'x'"
    assert isinstance(letter.position, FilePosition) and letter.position.line == 3
    again = run_ingest(common, FAST, path, progress=False)  # the whole file was acknowledged
    assert again.read == 0
