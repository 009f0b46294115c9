"""The event-id check of the features core: re-sent events dropped within a bounded window."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.features.core import (
    DedupeConfig,
    EventIdColumns,
    IdWindow,
    PartitionIds,
    RecordBatch,
    dedupe_batch,
    parse_event_ids,
    split_batch,
)
from stages.features.store import event_ids_key

from .conftest import synthetic_events


def _ids(*ids: str) -> EventIdColumns:
    return parse_event_ids(list(ids))


def _apply(state: PartitionIds, ids: EventIdColumns, config: DedupeConfig) -> PartitionIds:
    """What the store does after a successful write: the new windows, version + 1."""
    verdict = dedupe_batch(ids, state, config)
    windows = {t: w for t, w in state.windows.items() if t not in verdict.evict}
    windows.update(verdict.updates)
    return PartitionIds(state.version + 1, windows)


def test_parse_event_ids_in_columns() -> None:
    cols = _ids("fabc:0", "s12:7", "fabc:18446744073709551615", "fabc:3")
    assert cols.tags == ("fabc", "s12")
    assert cols.source.tolist() == [0, 1, 0, 0]
    assert cols.seq.tolist() == [0, 7, -1, 3]  # >= 2**62: never checked
    assert len(parse_event_ids([])) == 0


def test_a_resent_tail_is_dropped_and_the_first_copy_kept() -> None:
    config = DedupeConfig(window=1024, max_sources=4)
    state = _apply(PartitionIds(0), _ids(*[f"f1:{i}" for i in range(100)]), config)
    # A resumed ingest re-sends 70..99, then goes on with 100..119.
    again = _ids(*[f"f1:{i}" for i in range(70, 120)])
    verdict = dedupe_batch(again, state, config)
    assert verdict.dropped == 30 and verdict.unchecked == 0
    assert verdict.keep.tolist() == list(range(30, 50))
    assert verdict.updates["f1"].high == 119 and verdict.updates["f1"].used == state.version + 1


def test_copies_inside_one_batch_count_once_in_offset_order() -> None:
    config = DedupeConfig(window=64, max_sources=4)
    verdict = dedupe_batch(_ids("a:5", "a:6", "a:5", "b:5", "a:6"), PartitionIds(0), config)
    assert verdict.keep.tolist() == [0, 1, 3] and verdict.dropped == 2


def test_events_older_than_the_window_are_stored_unchecked_and_counted() -> None:
    config = DedupeConfig(window=64, max_sources=4)
    state = _apply(PartitionIds(0), _ids(*[f"a:{i}" for i in range(200)]), config)
    # Seqs 0..136 are more than 64 behind the high-water mark 199: not recognised, counted.
    verdict = dedupe_batch(_ids("a:10", "a:150", "a:199", "a:200"), state, config)
    assert verdict.keep.tolist() == [0, 3] and verdict.dropped == 2 and verdict.unchecked == 1


def test_a_jump_past_the_window_forgets_the_old_seqs() -> None:
    config = DedupeConfig(window=64, max_sources=4)
    state = _apply(PartitionIds(0), _ids("a:1", "a:2"), config)
    state = _apply(state, _ids("a:1000"), config)
    seen = state.windows["a"].seen
    assert seen.sum() == 1 and seen[1000 % 64]
    # 1 and 2 are now out of the window: unchecked, not dropped.
    verdict = dedupe_batch(_ids("a:2", "a:1000"), state, config)
    assert (verdict.dropped, verdict.unchecked) == (1, 1)


def test_sources_are_bounded_least_recently_written_forgotten() -> None:
    config = DedupeConfig(window=64, max_sources=2)
    state = _apply(PartitionIds(0), _ids("a:1"), config)
    state = _apply(state, _ids("b:1"), config)
    verdict = dedupe_batch(_ids("c:1", "b:1"), state, config)
    assert verdict.evict == ["a"] and set(verdict.updates) == {"b", "c"}
    assert verdict.dropped == 1
    # More new sources in one batch than fit: the busiest get a window, the rest go unchecked.
    verdict = dedupe_batch(_ids("x:1", "y:1", "y:2", "z:1", "z:2", "z:3"), PartitionIds(0), config)
    assert set(verdict.updates) == {"y", "z"} and verdict.unchecked == 1


def test_window_zero_turns_the_check_off_and_bad_configs_raise() -> None:
    verdict = dedupe_batch(_ids("a:1", "a:1"), PartitionIds(0), DedupeConfig(0, 1))
    assert verdict.keep.tolist() == [0, 1] and verdict.updates == {}
    with pytest.raises(ValueError):
        DedupeConfig(window=12, max_sources=1)
    with pytest.raises(ValueError):
        DedupeConfig(window=64, max_sources=0)
    with pytest.raises(ValueError):
        IdWindow.from_bytes(b"short", 64)


def test_window_bytes_round_trip_and_rewindow() -> None:
    config = DedupeConfig(window=64, max_sources=2)
    state = _apply(PartitionIds(0), _ids(*[f"a:{i}" for i in range(90, 130, 3)]), config)
    window = state.windows["a"]
    back = IdWindow.from_bytes(window.to_bytes(), 64)
    assert (back.high, back.used) == (window.high, window.used)
    assert np.array_equal(back.seen, window.seen)
    assert len(window.to_bytes()) == 16 + 64 // 8
    # Smaller window: only the seqs within it stay known.
    small = IdWindow.from_bytes(window.to_bytes(), 16)
    kept = sorted(s for s in range(90, 130, 3) if s > 129 - 16)
    assert sorted(np.flatnonzero(small.seen).tolist()) == sorted(s % 16 for s in kept)


def test_event_ids_key_exact_bytes() -> None:
    assert event_ids_key("ns", "freshrec.events", 3) == b"freshrec:v1:{ns}:offsets:freshrec.events:ids:3"


def test_split_batch_carries_the_ids_and_keep_samples_counts_the_drops() -> None:
    values = synthetic_events(6, source="tagx")
    values[2] = b"not an event"
    records = RecordBatch(
        "events", np.zeros(6, np.int32), np.arange(6, dtype=np.int64), [None] * 6, values
    )
    (batch,) = split_batch(records).batches
    assert batch.sample_ids.tags == ("tagx",)
    assert batch.sample_ids.seq.tolist() == [0, 1, 3, 4, 5]
    kept = batch.keep_samples(np.asarray([0, 3], np.int64))
    assert kept.dropped_by_id == 3 and len(kept.samples) == 2
    assert kept.events == len(kept.samples) + len(kept.dead_letters) + kept.dropped_by_id
    assert kept.sample_offsets.tolist() == [0, 4] and kept.sample_ids.seq.tolist() == [0, 4]
    assert batch.keep_samples(np.arange(5, dtype=np.int64)) is batch
    with pytest.raises(ValueError):
        kept.since(3)


@given(
    st.lists(st.lists(st.integers(0, 300), min_size=1, max_size=60), min_size=1, max_size=4),
    st.sampled_from([8, 64, 512]),
)
def test_within_the_window_every_id_is_stored_once(batches: list[list[int]], window: int) -> None:
    """Against a reference model: a seq within the window (> the high-water mark after its
    batch - window) is kept iff never stored before and not earlier in its batch; older seqs
    are kept unchecked."""
    config = DedupeConfig(window=window, max_sources=4)
    state, stored, high = PartitionIds(0), set(), -1
    for seqs in batches:
        verdict = dedupe_batch(_ids(*[f"t:{s}" for s in seqs]), state, config)
        high = max(high, *seqs)
        expected, now = [], set()
        for i, s in enumerate(seqs):
            if s <= high - window or (s not in stored and s not in now):
                expected.append(i)
            now.add(s)
        assert verdict.keep.tolist() == expected
        assert verdict.unchecked == sum(s <= high - window for s in seqs)
        assert verdict.dropped == len(seqs) - len(expected)
        stored.update(seqs[i] for i in expected)
        state = _apply(state, _ids(*[f"t:{s}" for s in seqs]), config)


def test_ingest_tags_a_loop_and_a_synthetic_run_anew_each_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Sources whose runs restart at seq 0 must not reuse ids, or the second run's events
    would be dropped as re-sent: --loop and the generator get a tag per run."""
    from stages.ingest.core.synthetic import SyntheticConfig
    from stages.ingest.sources import file_batches, file_tag, synthetic_batches, synthetic_run_tag

    path = tmp_path / "rows.tsv"
    path.write_bytes(b"a\nb\n")
    tags = {next(file_batches(path, chunk_bytes=64, max_line=9, loop=True)).position.source_tag
            for _ in range(2)}
    assert len(tags) == 2 and file_tag(path) not in tags
    # Read once, a file keeps its stable tag (a resumed run re-sends under the same ids).
    assert next(file_batches(path, chunk_bytes=64, max_line=9)).position.source_tag == file_tag(path)
    config = SyntheticConfig(seed=2**63 - 1)
    runs = {next(synthetic_batches(config, 0, 1)).position.source_tag for _ in range(2)}
    assert len(runs) == 2 and all(len(t) <= 32 and t.startswith("syn9223372036854775807-")
                                  for t in runs)
    assert len(synthetic_run_tag(SyntheticConfig(seed=0))) == 5 + 20
