"""The dead-letter record, the `gaps` lines and the checkpoint state: strict and versioned."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.common.dead_letter import DeadLetterRecord, FilePosition, TopicPosition
from stages.common.errors import ContractError
from stages.common.gaps import OffsetGapRecord, TrimmedBlocksRecord, parse_gap_line
from stages.common.trainer_state import CheckpointState, StorePointer


def _letter(position: FilePosition | TopicPosition, raw: bytes = b"x") -> DeadLetterRecord:
    return DeadLetterRecord.of(
        stage="ingest" if isinstance(position, FilePosition) else "features",
        reason="bad row: I3 is not an integer: 'x'",
        kind="bad row: I3 is not an integer",
        raw=raw,
        key=b"k:1",
        position=position,
        time_ms=1_700_000_000_000,
    )


@given(raw=st.binary(max_size=200), key=st.one_of(st.none(), st.binary(max_size=40)))
def test_dead_letter_round_trips_any_bytes(raw: bytes, key: bytes | None) -> None:
    record = DeadLetterRecord.of(
        stage="features", reason="r", kind="r", raw=raw, key=key,
        position=TopicPosition(topic="ev", partition=2, offset=9), time_ms=5,
    )
    back = DeadLetterRecord.parse(record.value())
    assert back == record and back.raw == raw and back.key == key and back.raw_length == len(raw)


def test_dead_letter_wire_format_is_fixed() -> None:
    fields = json.loads(_letter(FilePosition(source="-", source_tag="s", line=3, seq=2)).value())
    assert sorted(fields) == [
        "key_b64", "kind", "position", "raw_b64", "raw_length", "reason", "schema_version",
        "stage", "time_ms",
    ]
    assert fields["position"] == {"kind": "file", "source": "-", "source_tag": "s", "line": 3,
                                  "seq": 2}
    topic = json.loads(_letter(TopicPosition(topic="ev", partition=0, offset=7)).value())
    assert topic["position"] == {"kind": "topic", "topic": "ev", "partition": 0, "offset": 7}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown field 'extra'"),
        ({"schema_version": 2}, "schema_version"),
        ({"stage": "train"}, "stage"),
        ({"raw_b64": "not base64!"}, "raw_b64"),
        ({"position": {"kind": "file", "source": "-"}}, "position"),
        ({"position": {"kind": "topic", "topic": "t", "partition": 0, "offset": 1, "x": 2}},
         "unknown field"),
    ],
)
def test_dead_letter_refuses_what_breaks_the_contract(change: dict, message: str) -> None:
    good = json.loads(_letter(TopicPosition(topic="ev", partition=0, offset=7)).value())
    with pytest.raises(ContractError, match=message):
        DeadLetterRecord.parse({**good, **change})
    missing = dict(good)
    del missing["reason"]
    with pytest.raises(ContractError, match="missing field 'reason'"):
        DeadLetterRecord.parse(missing)


def test_gap_lines_of_both_stages() -> None:
    offset = OffsetGapRecord(topic="ev", partition=1, expected=80, got=90)
    trimmed = TrimmedBlocksRecord(consumer="t", first_seq=3, last_seq=4, blocks=2, time_ms=1)
    assert parse_gap_line(offset.to_json()) == offset and offset.missing == 10
    assert parse_gap_line(trimmed.to_json().encode()) == trimmed
    # the features stage's Lua script writes this shape (cjson, any key order)
    lua = b'{"got":90,"partition":1,"kind":"offset_gap","expected":80,"stage":"features",' \
          b'"schema_version":1,"topic":"ev"}'
    assert parse_gap_line(lua) == offset


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"nope", "not JSON"),
        (b'{"kind": "other"}', "unknown kind"),
        (b'{"kind": "offset_gap", "topic": "ev", "partition": 0, "expected": 1}',
         "missing field 'got'"),
        (b'{"kind":"offset_gap","topic":"ev","partition":0,"expected":1,"got":2,"x":0}',
         "unknown field 'x'"),
    ],
)
def test_bad_gap_lines_raise_contract_error(line: bytes, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        parse_gap_line(line)


STATE = CheckpointState(
    window=7, samples=700, store=StorePointer(stream_id="17-0", seq=9), replay_file=None,
    replay_rows=0, export_seq=3, last_full_seq=2, run_id="r", world_size=1, missed_blocks=0,
)


def test_checkpoint_state_round_trip_and_legacy_version() -> None:
    assert CheckpointState.parse(STATE.to_json()) == STATE
    legacy = {**STATE.to_dict(), "version": 1}
    del legacy["schema_version"]
    assert CheckpointState.parse(json.dumps(legacy, indent=1)) == STATE


def test_checkpoint_state_is_strict() -> None:
    with pytest.raises(ContractError, match="unknown field 'extra'"):
        CheckpointState.parse({**STATE.to_dict(), "extra": 1})
    with pytest.raises(ContractError, match="schema_version"):
        CheckpointState.parse({**STATE.to_dict(), "schema_version": 2})
    with pytest.raises(ContractError, match="schema_version"):
        CheckpointState.parse('{"version": 99}')
    partial = {"schema_version": 1, "run_id": "r", "last_full_seq": 1, "export_seq": 2}
    with pytest.raises(ContractError, match="missing field"):
        CheckpointState.parse(partial)
