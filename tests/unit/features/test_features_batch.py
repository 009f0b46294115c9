import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.common.dead_letter import DeadLetterRecord, TopicPosition
from stages.common.gaps import OffsetGapRecord, parse_gap_line
from stages.common.schema import load_schema
from stages.common.events import encode_event, event_error
from stages.features.core import RecordBatch, SchemaCodec, default_codec, split_batch

from .conftest import synthetic_events


def _records(values: list[bytes], partitions: list[int], offsets: list[int]) -> RecordBatch:
    return RecordBatch(
        "events",
        np.asarray(partitions, np.int32),
        np.asarray(offsets, np.int64),
        [b"k%d" % i for i in range(len(values))],
        values,
    )


def test_split_groups_by_partition_in_offset_order(events: list[bytes]) -> None:
    # Partition 1 arrives out of order and interleaved with partition 0.
    parts = [i % 2 for i in range(40)]
    offs = [100 + i // 2 if i % 2 == 0 else 59 - i // 2 for i in range(40)]
    codec = SchemaCodec.for_schema(load_schema("criteo"))
    result = split_batch(_records(events, parts, offs), codec)
    assert [b.partition for b in result.batches] == [0, 1]
    p0, p1 = result.batches
    assert (p0.first_offset, p0.last_offset, p0.events) == (100, 119, 20)
    assert (p1.first_offset, p1.last_offset, p1.events) == (40, 59, 20)
    assert p1.sample_offsets.tolist() == list(range(40, 60))
    # Samples are exactly the schema's transform of the same events, in offset order, and
    # carry the schema's hash.
    order = [i for i in range(40) if i % 2 == 1][::-1]
    expected = codec.samples(codec.decode([events[i] for i in order]).events)
    assert p0.schema_hash == p1.schema_hash == codec.schema_hash
    assert p1.samples.dense.shape == (20, 13) and p1.samples.ids.shape == (20, 26)
    assert np.array_equal(p1.samples.ids, expected.ids)
    assert np.array_equal(p1.samples.dense, expected.dense)
    assert np.array_equal(p1.samples.label, expected.label)
    assert result.repeated == 0 and p0.gaps == [] and p1.gaps == []


def test_bad_records_become_dead_letters_with_reason(events: list[bytes]) -> None:
    values = list(events[:6])
    values[2] = b"not an event"
    *envelope, row = values[4].split(b"\t", 4)
    values[4] = b"\t".join([*envelope, row.replace(b"\t", b"\tX", 5)])  # bad dense cells
    result = split_batch(_records(values, [3] * 6, list(range(10, 16))))
    (batch,) = result.batches
    assert batch.events == 6 and len(batch.samples) == 4
    assert [d.offset for d in batch.dead_letters] == [12, 14]
    assert batch.sample_offsets.tolist() == [10, 11, 13, 15]
    # The reason is the event contract's, for the schema the worker runs.
    parser = default_codec().parser
    assert batch.dead_letters[0].reason == event_error(values[2], parser)
    record = DeadLetterRecord.parse(batch.dead_letters[1].record(1234).value())
    assert record.stage == "features" and record.time_ms == 1234
    assert record.position == TopicPosition(topic="events", partition=3, offset=14)
    assert record.key == b"k4" and record.raw == values[4] and record.raw_length == len(values[4])
    assert record.reason == batch.dead_letters[1].reason and record.kind.startswith("bad ")
    kind = batch.dead_letters[0].kind
    assert batch.dead_letters[0].reason.startswith(kind) and "'" not in kind


def test_repeated_records_count_once_and_gaps_are_reported(events: list[bytes]) -> None:
    result = split_batch(_records(events[:5], [0] * 5, [1, 2, 2, 5, 6]))
    (batch,) = result.batches
    assert result.repeated == 1 and batch.events == 4
    assert [(g.expected, g.got) for g in batch.gaps] == [(3, 5)]
    assert parse_gap_line(batch.gaps[0].to_json()) == OffsetGapRecord(
        topic="events", partition=0, expected=3, got=5
    )


def test_since_trims_rows_below_the_watermark(events: list[bytes]) -> None:
    values = list(events[:10])
    values[7] = b"bad"
    (batch,) = split_batch(_records(values, [0] * 10, list(range(20, 30)))).batches
    assert batch.since(20) is batch and batch.since(5) is batch
    assert batch.since(30) is None
    rest = batch.since(25)
    assert rest is not None
    assert (rest.first_offset, rest.last_offset, rest.events) == (25, 29, 5)
    assert rest.sample_offsets.tolist() == [25, 26, 28, 29]
    assert [d.offset for d in rest.dead_letters] == [27]
    assert np.array_equal(rest.samples.ids, batch.samples.ids[-4:])
    assert len(rest.raw) == 4


def test_empty_batch_gives_nothing() -> None:
    assert split_batch(_records([], [], [])).batches == []


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 60), st.booleans()), min_size=1, max_size=50
    )
)
def test_every_record_is_a_sample_or_a_dead_letter(spec: list[tuple[int, int, bool]]) -> None:
    good = synthetic_events(len(spec), seed=len(spec))
    values = [g if ok else b"broken" + g[:20] for g, (_, _, ok) in zip(good, spec)]
    result = split_batch(_records(values, [p for p, _, _ in spec], [o for _, o, _ in spec]))
    unique = {(p, o) for p, o, _ in spec}
    assert sum(b.events for b in result.batches) + result.repeated == len(spec)
    assert sum(b.events for b in result.batches) == len(unique)
    for batch in result.batches:
        offsets = sorted(batch.sample_offsets.tolist() + [d.offset for d in batch.dead_letters])
        assert offsets == sorted(o for p, o in unique if p == batch.partition)
        assert batch.events == len(batch.samples) + len(batch.dead_letters)
        assert (batch.first_offset, batch.last_offset) == (offsets[0], offsets[-1])
        for cut in (offsets[0], offsets[len(offsets) // 2], offsets[-1] + 1):
            rest = batch.since(cut)
            kept = [o for o in offsets if o >= cut]
            assert (rest is None) == (not kept)
            if rest is not None:
                assert rest.events == len(kept) == len(rest.samples) + len(rest.dead_letters)


def test_an_event_of_another_schema_is_a_dead_letter_naming_both(events: list[bytes]) -> None:
    criteo, shop = load_schema("criteo"), load_schema("ecommerce")
    row = events[0].split(b"\t", 4)[4]
    other = encode_event("x:1", 5, row, shop.schema_hash)
    (batch,) = split_batch(_records([events[1], other], [0, 0], [0, 1]), default_codec()).batches
    assert len(batch.samples) == 1 and [d.offset for d in batch.dead_letters] == [1]
    reason = batch.dead_letters[0].reason
    assert shop.schema_hash in reason and criteo.schema_hash in reason
