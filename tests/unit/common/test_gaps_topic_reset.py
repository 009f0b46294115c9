"""The topic_reset gap line: strict, versioned, and what the features script writes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.common.errors import ContractError
from stages.common.gaps import TopicResetRecord, parse_gap_line


def _record() -> TopicResetRecord:
    return TopicResetRecord(
        topic="freshrec.events", old_topic_id="AaJIy/rufROSrugJTE9dNw",
        new_topic_id="AaJIzA/mfxKDkY146eK/DA", partitions=4, stored_offsets=1000,
        time_ms=1_700_000_000_000,
    )


def test_round_trips_and_has_a_fixed_wire_format() -> None:
    record = _record()
    assert parse_gap_line(record.to_json()) == record
    assert sorted(json.loads(record.to_json())) == [
        "kind", "new_topic_id", "old_topic_id", "partitions", "schema_version", "stage",
        "stored_offsets", "time_ms", "topic",
    ]


def test_parses_the_line_as_the_lua_script_builds_it() -> None:
    # cjson: unsorted keys, integers as numbers, slashes escaped
    lua = (
        '{"stored_offsets":1000,"kind":"topic_reset","schema_version":1,"stage":"features",'
        '"topic":"freshrec.events","old_topic_id":"AaJIy\\/rufROSrugJTE9dNw",'
        '"new_topic_id":"AaJIzA\\/mfxKDkY146eK\\/DA","partitions":4,"time_ms":1700000000000}'
    )
    assert parse_gap_line(lua) == _record()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown field"),
        ({"schema_version": 2}, "schema_version"),
        ({"stage": "train"}, "stage"),
        ({"old_topic_id": ""}, "old_topic_id"),
        ({"stored_offsets": -1}, "stored_offsets"),
    ],
)
def test_refuses_a_broken_line(change: dict[str, object], message: str) -> None:
    fields = {**_record().to_dict(), **change}
    with pytest.raises(ContractError, match=message):
        parse_gap_line(json.dumps(fields))


@given(partitions=st.integers(0, 10_000), stored=st.integers(0, 2**62))
def test_any_counts_round_trip(partitions: int, stored: int) -> None:
    record = _record().model_copy(update={"partitions": partitions, "stored_offsets": stored})
    assert parse_gap_line(record.to_json().encode()) == record
