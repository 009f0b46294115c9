"""TFEngine on schema layouts beyond Criteo's: pooled, narrow, wide-only and standardised inputs
give the reference model's predictions, the running statistics are the data's, a learnable
sample is learned, and a checkpoint of another schema is refused."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from tests.unit.train.engine import layouts

from stages.common import reference_model
from stages.common.layout import compile_layout
from stages.common.errors import TrainError
from stages.common.model_export import ModelSpec
from stages.common.schema import FeatureSchema, SchemaError, load_schema
from stages.train.core.engine_protocol import EngineConfig

pytest.importorskip("tensorflow")
from stages.train.engine import TFEngine  # noqa: E402
from stages.train.engine.models import fallback_table  # noqa: E402

SCHEMAS = {"ecommerce": layouts.ecommerce, "standardized": layouts.standardized}


def spec_of(schema: FeatureSchema, model: str, dim: int = 16) -> ModelSpec:
    return ModelSpec.from_layout(compile_layout(schema, dim), model, (16, 8),  # type: ignore[arg-type]
                                 2 if model == "dcn" else 0)


def engine(spec: ModelSpec, **kw: object) -> TFEngine:
    cfg = {"batch_size": 64, "learning_rate": 0.05, "table_capacity": 10_000, **kw}
    return TFEngine(EngineConfig(spec=spec, **cfg))  # type: ignore[arg-type]


def test_the_layouts_are_what_the_tests_claim() -> None:
    spec = spec_of(layouts.ecommerce(), "wide_deep")
    assert not spec.simple and spec.n_fields == 12 and spec.n_dense == 1
    pooling = {g.name: (g.n_slots, g.pooling, g.dim, g.deep) for g in spec.groups}
    assert pooling["recent_items"] == (5, "mean", 16, True)
    assert pooling["category"][2] == 8 and pooling["device_x_category"][3] is False
    ids, index = fallback_table(spec)
    assert len(ids) == 7 and list(index) == [0, 1, 2, 3, 4, 1, 1, 1, 1, 1, 5, 6]
    assert set(ids) == set(spec.fallback_ids())
    std = spec_of(layouts.standardized(), "dcn")
    assert std.standardize == (True, False)
    criteo = spec_of(load_schema("criteo"), "wide_deep")
    assert criteo.simple and list(fallback_table(criteo)[1]) == list(range(26))


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
@pytest.mark.parametrize("model", ["wide_deep", "dcn"])
def test_predict_equals_reference_on_export(schema: str, model: str) -> None:
    rng = np.random.default_rng(1)
    fields = SCHEMAS[schema]()
    spec = spec_of(fields, model)
    eng = engine(spec, optimizer="adam")
    for _ in range(3):
        eng.train(layouts.sample(fields, rng, 300))
    probe = layouts.sample(fields, rng, 400, vocab=300)  # some ids never admitted: fallbacks
    export = eng.export(1, True, {})
    assert export is not None
    assert len(export.ids) == len(np.unique(export.ids)) == eng.table_size() + 7
    expected = reference_model.predict(export, probe.dense, probe.ids)
    got = eng.predict(probe)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert got.std() > 1e-3  # the model moved: the comparison is not of constants
    assert ("norm/mean" in export.dense) == (schema == "standardized")


def test_running_statistics_of_standardized_columns() -> None:
    fields = layouts.standardized()
    eng = engine(spec_of(fields, "wide_deep"), batch_size=100)
    rng = np.random.default_rng(2)
    batches = [layouts.sample(fields, rng, 500) for _ in range(3)]
    for batch in batches:
        eng.train(batch)
    x = np.concatenate([b.dense for b in batches]).astype(np.float64)
    dense = eng.net.dense_numpy()
    # 1,500 rows, below NORM_MEMORY: the exact mean and (population) variance of price
    np.testing.assert_allclose(dense["norm/mean"][0], x[:, 0].mean(), rtol=1e-4)
    np.testing.assert_allclose(dense["norm/var"][0], x[:, 0].var(), rtol=1e-3)
    assert dense["norm/mean"][1] == 0.0 and dense["norm/var"][1] == 1.0  # rating: unmarked
    before = eng.net.dense_numpy()
    eng.predict(batches[0])  # scoring does not move them
    assert all(np.array_equal(before[k], v) for k, v in eng.net.dense_numpy().items())


@pytest.mark.parametrize("model", ["wide_deep", "dcn"])
def test_a_learnable_sample_is_learned(model: str) -> None:
    fields = layouts.standardized()
    eng = engine(spec_of(fields, model), batch_size=128, admit_after=1)
    rng = np.random.default_rng(3)
    losses = [eng.train(layouts.sample(fields, rng, 2000)).loss for _ in range(6)]
    assert losses[-1] < losses[0] - 0.05, losses
    probe = layouts.sample(fields, rng, 2000)
    p = eng.predict(probe)
    y = probe.label.astype(np.float64)
    logloss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    base = y.mean()
    prior = -(base * np.log(base) + (1 - base) * np.log(1 - base))
    assert logloss < prior - 0.05, (logloss, prior)


def test_save_restore_round_trip_and_another_schema_refused(tmp_path: Path) -> None:
    fields = layouts.standardized()
    spec = spec_of(fields, "wide_deep")
    rng = np.random.default_rng(4)
    eng = engine(spec, admit_after=2, table_capacity=300)
    for _ in range(2):
        eng.train(layouts.sample(fields, rng, 256, vocab=200))
    eng.save(tmp_path / "ck")
    twin = engine(spec, admit_after=2, table_capacity=300)
    twin.restore(tmp_path / "ck")
    probe = layouts.sample(fields, rng, 300)
    np.testing.assert_array_equal(eng.predict(probe), twin.predict(probe))
    more = layouts.sample(fields, rng, 256)
    assert eng.train(more).loss == twin.train(more).loss
    np.testing.assert_array_equal(eng.net.dense_numpy()["norm/var"],
                                  twin.net.dense_numpy()["norm/var"])
    other = engine(spec_of(layouts.ecommerce(), "wide_deep"))
    with pytest.raises(SchemaError, match=f"{fields.schema_hash}.*FRESHREC_SCHEMA"):
        other.restore(tmp_path / "ck")


def test_a_checkpoint_from_before_schemas_restores_as_criteo(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    legacy = ModelSpec("wide_deep", 4, (8,))
    old = engine(legacy)
    from tests.unit.train.engine.test_engine_tf import make_batch

    old.train(make_batch(rng, 200))
    old.save(tmp_path)
    new = engine(ModelSpec.from_layout(compile_layout(load_schema("criteo"), 4), "wide_deep", (8,)))
    assert new.spec != legacy and new.spec.schema_hash
    new.restore(tmp_path)
    probe = make_batch(rng, 100)
    np.testing.assert_array_equal(old.predict(probe), new.predict(probe))
    with pytest.raises(TrainError, match="another model spec"):
        engine(spec_of(layouts.ecommerce(), "wide_deep", dim=4)).restore(tmp_path)
