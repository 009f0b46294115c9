"""TFEngine on one process: reference equivalence, read-only predict, save/restore, deltas,
a bounded table on an endless stream, and the error paths."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from stages.common import reference_model
from stages.common.errors import TrainError
from stages.common.hashing import feature_ids
from stages.common.model_export import ModelSpec, apply_delta
from stages.common.samples import SampleBatch
from stages.train.core.engine_protocol import Engine, EngineConfig

pytest.importorskip("tensorflow")
from stages.train.engine import TFEngine  # noqa: E402

SPECS = {
    "wide_deep": ModelSpec("wide_deep", 4, (8, 4)),
    "dcn": ModelSpec("dcn", 4, (8,), cross_layers=2),
}


def make_batch(rng: np.random.Generator, n: int, vocab: int = 50) -> SampleBatch:
    values = rng.zipf(1.3, size=(n, 26)).astype(np.uint32) % np.uint32(vocab)
    missing = rng.random((n, 26)) < 0.1
    dense = rng.normal(size=(n, 13)).astype(np.float32)
    label = (rng.random(n) < 1 / (1 + np.exp(-dense[:, 0]))).astype(np.uint8)
    return SampleBatch(label, dense, feature_ids(values, missing), np.zeros(n, np.int64))


def engine(model: str, **kw: object) -> TFEngine:
    cfg = {"batch_size": 64, "learning_rate": 0.05, "table_capacity": 10_000, **kw}
    return TFEngine(EngineConfig(spec=SPECS[model], **cfg))  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["wide_deep", "dcn"])
@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_predict_equals_reference_on_export(model: str, optimizer: str) -> None:
    rng = np.random.default_rng(1)
    eng = engine(model, optimizer=optimizer)
    assert isinstance(eng, Engine) and (eng.rank, eng.size) == (0, 1)
    for _ in range(3):
        result = eng.train(make_batch(rng, 300))
    assert result.samples == 300 and result.steps == 5 and result.table_size == eng.table_size()
    probe = make_batch(rng, 400, vocab=200)  # some ids never admitted: fallback rows
    export = eng.export(1, True, {"note": "t"})
    assert export is not None and export.kind == "full" and export.meta == {"note": "t"}
    expected = reference_model.predict(export, probe.dense, probe.ids)
    np.testing.assert_allclose(eng.predict(probe), expected, atol=1e-5, rtol=0)
    assert len(export.ids) == eng.table_size() + 26


def test_an_untrained_engine_predicts_its_prior() -> None:
    probe = make_batch(np.random.default_rng(2), 100)
    np.testing.assert_allclose(engine("dcn", prior_ctr=0.1).predict(probe), 0.1, rtol=1e-5)
    with pytest.raises(ValueError, match="prior_ctr"):
        EngineConfig(spec=SPECS["dcn"], prior_ctr=0.0)


def test_overlapped_planning_changes_nothing() -> None:
    # Plans computed in the helper thread during the previous step (the default) must give
    # exactly the model that inline planning gives, evictions and slot reuse included.
    rng = np.random.default_rng(5)
    batches = [make_batch(rng, 512, vocab=400) for _ in range(4)]
    overlapped, inline = (engine("wide_deep", table_capacity=300, evict_after_steps=4)
                          for _ in range(2))  # fmt: skip
    inline.overlap_plans = False
    results = [[e.train(b) for b in batches] for e in (overlapped, inline)]
    assert [r.evicted for r in results[0]] == [r.evicted for r in results[1]]
    assert results[0][-1].evicted > 0 and results[0][-1].steps == 8
    for a, b in zip(overlapped.pool.state().values(), inline.pool.state().values()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(overlapped.predict(batches[0]), inline.predict(batches[0]))


def test_predict_reads_only() -> None:
    rng = np.random.default_rng(2)
    eng = engine("wide_deep", admit_after=2)
    eng.train(make_batch(rng, 200))
    probe = make_batch(rng, 200, vocab=500)
    before = (eng.table_size(), len(eng.table.cindex), eng.step, eng.net.dense_numpy())
    first = eng.predict(probe)
    np.testing.assert_array_equal(first, eng.predict(probe))
    after = (eng.table_size(), len(eng.table.cindex), eng.step, eng.net.dense_numpy())
    assert before[:3] == after[:3]
    for name, value in before[3].items():
        np.testing.assert_array_equal(value, after[3][name])
    empty = eng.predict(probe.take(slice(0, 0)))
    assert empty.shape == (0,) and empty.dtype == np.float64


def test_train_with_no_rows() -> None:
    eng = engine("wide_deep")
    result = eng.train(make_batch(np.random.default_rng(0), 0))
    assert result.samples == 0 and result.steps == 0 and np.isnan(result.loss)


@pytest.mark.parametrize("model", ["wide_deep", "dcn"])
def test_save_restore_round_trip(model: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    eng = engine(model, optimizer="adam", admit_after=2, table_capacity=200)
    for _ in range(3):
        eng.train(make_batch(rng, 256, vocab=300))
    eng.export(1, True, {})
    eng.save(tmp_path)
    twin = engine(model, optimizer="adam", admit_after=2, table_capacity=200)
    twin.restore(tmp_path)
    probe = make_batch(rng, 300, vocab=300)
    np.testing.assert_array_equal(eng.predict(probe), twin.predict(probe))
    more = make_batch(rng, 256, vocab=300)
    a, b = eng.train(more), twin.train(more)
    assert (a.loss, a.table_size, a.evicted) == (b.loss, b.table_size, b.evicted)
    np.testing.assert_array_equal(eng.predict(probe), twin.predict(probe))
    da, db = eng.export(2, False, {}), twin.export(2, False, {})
    assert da is not None and db is not None
    np.testing.assert_array_equal(da.ids, db.ids)
    np.testing.assert_array_equal(da.evicted, db.evicted)


def test_delta_onto_previous_full_equals_next_full() -> None:
    rng = np.random.default_rng(4)
    eng = engine("wide_deep", table_capacity=150, evict_after_steps=6, admit_after=1)
    eng.train(make_batch(rng, 256, vocab=400))
    full1 = eng.export(1, True, {})
    for _ in range(4):
        eng.train(make_batch(rng, 256, vocab=400))
    delta2 = eng.export(2, False, {"w": 2})
    full3 = eng.export(3, True, {})
    assert full1 is not None and delta2 is not None and full3 is not None
    assert delta2.kind == "delta" and delta2.base_seq == 1 and delta2.evicted.size > 0
    merged = apply_delta(full1, delta2)
    np.testing.assert_array_equal(merged.ids, full3.ids)
    np.testing.assert_array_equal(merged.rows, full3.rows)
    for name, value in full3.dense.items():
        np.testing.assert_array_equal(merged.dense[name], value)
    # nothing changed since export 3: the next delta has only the fallback rows
    delta4 = eng.export(4, False, {})
    assert delta4 is not None and len(delta4.ids) == 26 and delta4.evicted.size == 0


def test_endless_stream_keeps_table_within_capacity() -> None:
    rng = np.random.default_rng(5)
    eng = engine("dcn", table_capacity=300, admit_after=1, batch_size=128)
    seen: set[int] = set()
    for _ in range(15):
        batch = make_batch(rng, 256, vocab=100_000)
        seen.update(np.unique(batch.ids).tolist())
        result = eng.train(batch)
        assert result.table_size <= 300 and eng.table_size() <= 300
    assert len(seen) > 10 * 300
    assert result.evicted > 0


def test_error_paths(tmp_path: Path) -> None:
    eng = engine("wide_deep")
    with pytest.raises(TrainError, match="first export"):
        eng.export(1, False, {})
    with pytest.raises(TrainError, match="no state.json"):
        eng.restore(tmp_path)
    eng.save(tmp_path / "ck")
    other = engine("dcn")
    with pytest.raises(TrainError, match="another model spec"):
        other.restore(tmp_path / "ck")


def test_a_short_last_mini_batch_weighs_each_row_the_same() -> None:
    """The loss divides by the nominal mini-batch, not by the rows in the step: with SGD, one
    row alone in a step of batch 4 (a window's short last mini-batch) moves the head bias by 1/4
    of what batch 1 moves it, not as if it were a whole mini-batch (the cause of held-out AUC
    falling after more rows, bench/RESULTS-train.md)."""
    rows = make_batch(np.random.default_rng(3), 1)

    def bias_step(batch_size: int) -> float:
        eng = engine("wide_deep", optimizer="sgd", batch_size=batch_size)
        before = float(eng.net.dense["head/bias"].numpy()[0])
        eng.train(rows)
        return float(eng.net.dense["head/bias"].numpy()[0]) - before

    one, four = bias_step(1), bias_step(4)
    assert one != 0.0
    np.testing.assert_allclose(four, one / 4, rtol=1e-4)  # float32
