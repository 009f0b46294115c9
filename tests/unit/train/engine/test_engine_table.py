"""ShardTable: admission, capacity, age eviction, bounded counters, deltas, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from stages.train.engine.table import ShardTable


def ids(*values: int) -> np.ndarray:
    return np.array(values, np.uint64)


def ones(n: int) -> np.ndarray:
    return np.ones(n, np.int64)


def test_admission_after_n_sightings() -> None:
    table = ShardTable(capacity=10, admit_after=3, evict_after_steps=0)
    for step in (1, 2):
        res = table.resolve(ids(7, 8), ones(2), step)
        assert (res.slots == -1).all() and len(table) == 0
    res = table.resolve(ids(7), ones(1), 3)
    assert res.slots[0] >= 0 and res.new_ids.tolist() == [7] and len(table) == 1
    assert table.lookup(ids(7, 8)).tolist() == [res.slots[0], -1]
    # counts in one batch add up: 3 occurrences admit at once
    res = table.resolve(ids(9), np.array([3]), 4)
    assert res.slots[0] >= 0


def test_lookup_changes_nothing() -> None:
    table = ShardTable(capacity=4, admit_after=1, evict_after_steps=0)
    assert table.lookup(ids(1, 2)).tolist() == [-1, -1]
    assert len(table) == 0 and len(table.cindex) == 0


def test_capacity_evicts_least_used_not_current() -> None:
    table = ShardTable(capacity=4, admit_after=1, evict_after_steps=0)
    table.resolve(ids(1, 2, 3, 4), np.array([5, 1, 5, 5]), 1)
    res = table.resolve(ids(10, 3), ones(2), 2)
    assert len(table) == 4 and res.evicted == 1
    assert table.lookup(ids(2)).tolist() == [-1]  # the least used went
    assert (res.slots >= 0).all()


def test_no_room_when_everything_is_current() -> None:
    table = ShardTable(capacity=2, admit_after=1, evict_after_steps=0)
    res = table.resolve(ids(1, 2, 3), np.array([1, 3, 2]), 1)
    assert len(table) == 2
    assert sorted(table.lookup(ids(1, 2, 3)).tolist())[0] == -1  # one waits
    assert res.slots[0] == -1  # the least counted one


def test_age_eviction_and_delta() -> None:
    table = ShardTable(capacity=8, admit_after=1, evict_after_steps=3)
    table.resolve(ids(1, 2), ones(2), 1)
    changed, _, gone = table.take_delta()
    assert sorted(changed.tolist()) == [1, 2] and gone.size == 0
    table.resolve(ids(2), ones(1), 3)
    res = table.resolve(ids(5), ones(1), 4)  # id 1 unseen since step 1
    assert res.evicted == 1 and table.lookup(ids(1)).tolist() == [-1]
    changed, _, gone = table.take_delta()
    assert sorted(changed.tolist()) == [2, 5] and gone.tolist() == [1]
    table.resolve(ids(1), ones(1), 5)  # admitted again: not reported as evicted
    table.evict_slots(table.lookup(ids(5)))
    changed, _, gone = table.take_delta()
    assert changed.tolist() == [1] and gone.tolist() == [5]


def test_counters_are_bounded() -> None:
    table = ShardTable(capacity=4, admit_after=5, evict_after_steps=0, counter_capacity=50)
    for step in range(1, 40):
        table.resolve(np.arange(step * 30, step * 30 + 30, dtype=np.uint64), ones(30), step)
        assert len(table.cindex) <= 50


def test_endless_stream_stays_within_capacity() -> None:
    rng = np.random.default_rng(0)
    table = ShardTable(capacity=500, admit_after=2, evict_after_steps=50)
    for step in range(1, 300):
        batch = np.unique(rng.zipf(1.1, 400).astype(np.uint64) + np.uint64(step * 1000))
        res = table.resolve(batch, ones(batch.size), step)
        assert len(table) <= 500 and len(table.cindex) <= table.counter_capacity
        assert table.occupied.sum() == len(table) == len(table.index)
        assert np.unique(res.slots[res.slots >= 0]).size == int((res.slots >= 0).sum())


def test_state_round_trip() -> None:
    table = ShardTable(capacity=6, admit_after=2, evict_after_steps=0)
    for step in range(1, 5):
        table.resolve(ids(1, 2, 3, step + 10), ones(4), step)
    copy = ShardTable(capacity=6, admit_after=2, evict_after_steps=0)
    copy.load_state(table.state())
    probe = ids(1, 2, 3, 11, 12, 13, 14, 99)
    assert copy.lookup(probe).tolist() == table.lookup(probe).tolist()
    a = table.resolve(ids(14, 50), ones(2), 9)
    b = copy.resolve(ids(14, 50), ones(2), 9)
    assert a.slots.tolist() == b.slots.tolist()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ShardTable(capacity=0, admit_after=1, evict_after_steps=0)
    table = ShardTable(capacity=3, admit_after=1, evict_after_steps=0)
    with pytest.raises(ValueError):
        table.load_state(ShardTable(capacity=4, admit_after=1, evict_after_steps=0).state())
