"""Delta merging and folding trainer exports (pure core)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataclasses import replace

from stages.common.model_export import ModelExport, ModelSpec, apply_delta, diff_exports
from stages.publish.core.merge import ChainGap, FoldState, fold, registered
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
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5),
       change=st.floats(0, 0.5), evict=st.floats(0, 0.3))
def test_the_diff_of_a_chain_applies_like_the_chain(
    seed: int, n: int, change: float, evict: float
) -> None:
    rng = np.random.default_rng(seed)
    base = full_export(SPEC, rng, n_rows=60)
    model = base
    for _ in range(n):
        model = apply_delta(model, delta_export(model, rng, change=change, evict=evict,
                                                add=int(rng.integers(0, 6))))
    diff = diff_exports(base, model)
    assert diff.kind == "delta" and diff.base_seq == base.export_seq
    _same(apply_delta(base, diff), model)
    assert not np.isin(diff.evicted, diff.ids).any()
    # only changed rows travel
    unchanged = np.isin(model.ids, base.ids)
    assert len(diff.ids) <= len(model.ids)
    assert len(diff_exports(model, model).ids) == 0 and unchanged.shape == model.ids.shape


def test_a_full_trainer_export_still_becomes_a_delta() -> None:
    rng = np.random.default_rng(5)
    full = full_export(SPEC, rng, n_rows=40)
    state = registered(fold(FoldState(), full, "run-a"))
    restarted = apply_delta(full, delta_export(full, rng, change=0.1, evict=0.1, add=3))
    state = fold(state, replace(restarted, export_seq=1), "run-b")  # a new trainer's full export
    assert not state.needs_full and state.delta is not None
    assert len(state.delta.ids) < len(restarted.ids)
    _same(apply_delta(full, state.delta), restarted)


def test_fold_tracks_delta_and_needs_full() -> None:
    rng = np.random.default_rng(2)
    full = full_export(SPEC, rng, n_rows=30)
    state = fold(FoldState(), full, "run-a")
    assert state.needs_full and state.delta is None and state.pending
    state = registered(state)
    assert not state.needs_full and not state.pending
    d2 = delta_export(full, rng)
    state = fold(state, d2, "run-a")
    assert state.delta is not None and state.trainer_seq == 2
    _same(apply_delta(full, state.delta), state.current)  # type: ignore[arg-type]
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
    assert not restarted.needs_full and restarted.run_id == "run-b"
