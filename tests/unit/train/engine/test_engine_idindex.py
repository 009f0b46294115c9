"""IdIndex: the vectorised uint64 -> int64 map behaves like a dict under any sequence of ops."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.train.engine.idindex import IdIndex

_ids = st.lists(st.integers(0, 2**64 - 1), max_size=60)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _ids), max_size=12))
def test_matches_a_dict(ops: list[tuple[bool, list[int]]]) -> None:
    index = IdIndex(4)
    model: dict[int, int] = {}
    counter = 0
    for insert, keys in ops:
        arr = np.array(keys, np.uint64)
        if insert:
            fresh = [k for k in dict.fromkeys(keys) if k not in model]
            vals = np.arange(counter, counter + len(fresh), dtype=np.int64)
            counter += len(fresh)
            index.put_new(np.array(fresh, np.uint64), vals)
            model.update(zip(fresh, vals.tolist()))
        else:
            index.delete(arr)
            for k in keys:
                model.pop(k, None)
        probe = np.array(keys + list(model), np.uint64)
        expect = [model.get(k, -1) for k in probe.tolist()]
        assert index.get(probe).tolist() == expect
        assert len(index) == len(model)


def test_shard_ids_with_constant_low_bits_spread() -> None:
    # A shard of 2 ranks holds only even (or odd) ids: they must still hash apart.
    index = IdIndex(16)
    ids = np.arange(0, 200_000, 2, dtype=np.uint64)
    index.put_new(ids, np.arange(ids.size, dtype=np.int64))
    assert (index.get(ids) == np.arange(ids.size)).all()
    assert (index.get(ids + np.uint64(1)) == -1).all()


def test_churn_keeps_tombstones_bounded() -> None:
    index = IdIndex(100)
    for round_ in range(50):
        ids = np.arange(round_ * 100, round_ * 100 + 100, dtype=np.uint64)
        index.put_new(ids, np.zeros(100, np.int64))
        index.delete(ids)
    assert len(index) == 0
    assert index._cap <= 1024  # noqa: SLF001  (rehash dropped the tombstones)
