"""Delta merging and folding trainer exports (pure core)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.common.model_export import ModelExport, ModelSpec, apply_delta
from stages.publish.core.merge import ChainGap, FoldState, fold, merge_deltas, registered
from stages.publish.synthetic import delta_export, full_export

SPEC = ModelSpec("wide_deep", 4, (8,))


def _same(a: ModelExport, b: ModelExport) -> None:
    assert a.kind == b.kind == "full"
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.dense.keys() == b.dense.keys()
    for k in a.dense:
        np.testing.assert_array_equal(a.dense[k], b.dense[k])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 5),
       change=st.floats(0, 0.5), evict=st.floats(0, 0.3))
def test_merged_deltas_apply_like_the_chain(seed: int, n: int, change: float, evict: float) -> None:
    rng = np.random.default_rng(seed)
    base = full_export(SPEC, rng, n_rows=60)
    model, merged = base, None
    for _ in range(n):
        delta = delta_export(model, rng, change=change, evict=evict, add=int(rng.integers(0, 6)))
        if rng.random() < 0.5 and len(model.ids):  # re-add ids evicted earlier
            readd = rng.integers(0, 2**63, 2, dtype=np.uint64)
            if merged is not None and len(merged.evicted):
                readd = np.concatenate([readd, merged.evicted[:2]])
            readd = np.unique(readd[~np.isin(readd, delta.ids)])
            delta = ModelExport(
                SPEC, "delta", delta.export_seq, delta.base_seq, delta.dense,
                np.concatenate([delta.ids, readd]),
                np.concatenate([delta.rows, rng.normal(size=(len(readd), 5)).astype(np.float32)]),
                delta.evicted[~np.isin(delta.evicted, readd)],
            )
        model = apply_delta(model, delta)
        merged = delta if merged is None else merge_deltas(merged, delta)
    assert merged is not None and merged.base_seq == base.export_seq
    _same(apply_delta(base, merged), model)
    assert not np.isin(merged.evicted, merged.ids).any()


def test_merge_refuses_a_gap() -> None:
    rng = np.random.default_rng(1)
    base = full_export(SPEC, rng, n_rows=20)
    d2 = delta_export(base, rng)
    d3 = delta_export(apply_delta(base, d2), rng)
    with pytest.raises(ChainGap):
        merge_deltas(d3, d2)


def test_fold_tracks_delta_and_needs_full() -> None:
    rng = np.random.default_rng(2)
    full = full_export(SPEC, rng, n_rows=30)
    state = fold(FoldState(), full, "run-a")
    assert state.needs_full and state.delta is None and state.pending
    state = registered(state)
    assert not state.needs_full and not state.pending
    d2 = delta_export(full, rng)
    state = fold(state, d2, "run-a")
    assert state.delta is d2 and state.trainer_seq == 2
    d3 = delta_export(state.current, rng)  # type: ignore[arg-type]
    state = fold(state, d3, "run-a")
    assert state.delta is not None and state.delta.base_seq == 1 and state.folded == 2
    _same(apply_delta(full, state.delta), state.current)  # type: ignore[arg-type]


def test_fold_refuses_a_delta_of_another_run() -> None:
    rng = np.random.default_rng(3)
    full = full_export(SPEC, rng, n_rows=10)
    state = registered(fold(FoldState(), full, "run-a"))
    with pytest.raises(ChainGap, match="waiting for the trainer's next full export"):
        fold(state, delta_export(full, rng), "run-b")
    restarted = fold(state, full_export(SPEC, rng, n_rows=10), "run-b")
    assert restarted.needs_full and restarted.run_id == "run-b"
