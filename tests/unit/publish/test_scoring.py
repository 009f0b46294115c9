"""Serving's scorer (`core.scoring`) and micro-batcher (`batching`): the reference's numbers."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from stages.common.layout import Transform, compile_layout
from stages.common.model_export import ModelExport, ModelSpec
from stages.common.reference_model import lookup_rows, predict
from stages.common.schema import load_schema
from stages.publish.batching import MicroBatcher
from stages.publish.core.requests import RequestParser
from stages.publish.core.scoring import IdIndex, Scorer
from stages.publish.loaded import LoadedModel
from stages.publish.core.records import records_to_raw
from stages.publish.synthetic import criteo_rows, full_export, schema_export, synthetic_records

CRITEO = load_schema("criteo")
PARSER = RequestParser(CRITEO, 4)
# serving computes in float32, the float64 reference differs by a few 1e-8
_F32_ATOL = 1e-6


def _inputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    inputs = PARSER.inputs(PARSER.text("\n".join(criteo_rows(n, np.random.default_rng(seed)))
                                       .encode(), 10_000))
    return inputs.dense, inputs.ids


@pytest.mark.parametrize("n_ids", [0, 1, 7, 1000, 5000])
def test_the_index_finds_every_id_and_no_other(n_ids: int) -> None:
    rng = np.random.default_rng(n_ids)
    ids = np.unique(rng.integers(0, 2**64 - 1, n_ids, dtype=np.uint64))
    rng.shuffle(ids)
    index = IdIndex.build(ids)
    np.testing.assert_array_equal(index.find(ids), np.arange(len(ids)))
    absent = rng.integers(0, 2**64 - 1, (300, 3), dtype=np.uint64)
    absent = np.where(np.isin(absent, ids), np.uint64(0), absent)
    assert (index.find(absent) == -1).all() or 0 in ids


def test_colliding_ids_probe_past_each_other() -> None:
    ids = (np.arange(64, dtype=np.uint64) << np.uint64(60 - 8))  # one home slot for many
    index = IdIndex.build(ids)
    np.testing.assert_array_equal(index.find(ids[::-1]), np.arange(64)[::-1])
    assert index.find(np.array([12345], np.uint64))[0] == -1


@pytest.mark.parametrize("spec", [ModelSpec("wide_deep", 4, (8, 4), 0),
                                  ModelSpec("dcn", 4, (6,), 2)])
@pytest.mark.parametrize("table", ["vocabulary", "random", "no fallbacks", "empty"])
def test_the_scorer_gives_the_reference_numbers(spec: ModelSpec, table: str) -> None:
    rng = np.random.default_rng(2)
    model = full_export(spec, rng) if table != "random" else full_export(spec, rng,
                                                                           n_rows=500)
    if table == "no fallbacks":
        keep = ~np.isin(model.ids, spec.fallback_ids())
        model = dataclasses.replace(model, ids=model.ids[keep], rows=model.rows[keep])
    if table == "empty":
        model = dataclasses.replace(model, ids=model.ids[:0], rows=model.rows[:0])
    dense, ids = _inputs(64, 3)
    scorer = Scorer(model)
    np.testing.assert_array_equal(scorer.lookup(ids), lookup_rows(
        model.ids, model.rows, ids, spec.fallback_ids()))
    # float32 against the float64 reference
    np.testing.assert_allclose(scorer.predict(dense, ids), predict(model, dense, ids),
                               rtol=0, atol=_F32_ATOL)


def test_the_scorer_gives_the_reference_numbers_on_a_pooled_layout() -> None:
    shop = load_schema("ecommerce")
    model: ModelExport = schema_export(shop, np.random.default_rng(4))
    raw = records_to_raw(shop, synthetic_records(shop, 20, np.random.default_rng(5)))
    transform = Transform(shop, compile_layout(shop, model.spec.embedding_dim))
    dense, ids = transform.dense(raw), transform.ids(raw)
    np.testing.assert_allclose(Scorer(model).predict(dense, ids), predict(model, dense, ids),
                               rtol=0, atol=_F32_ATOL)


def _loaded(seed: int) -> LoadedModel:
    spec = ModelSpec("wide_deep", 4, (8,), 0)
    return LoadedModel(full_export(spec, np.random.default_rng(seed)), str(seed), "full", 0)


def test_batched_requests_get_their_own_rows_numbers() -> None:
    old, new = _loaded(1), _loaded(2)
    bodies = ["\n".join(criteo_rows(n, np.random.default_rng(n))).encode()
              for n in (1, 3, 1, 5, 2)]
    models = [old, old, new, old, new]  # a swap between requests: one batch per model

    async def run() -> tuple[list[np.ndarray], MicroBatcher]:
        batcher = MicroBatcher(max_rows=1000)
        futures = [batcher.score(m, m.requests.text(b, 100)) for m, b in zip(models, bodies)]
        return list(await asyncio.gather(*futures)), batcher

    got, batcher = asyncio.run(run())
    assert (batcher.batches, batcher.batched_requests) == (1, 5)  # one turn of the loop
    for probs, model, body in zip(got, models, bodies):
        inputs = model.requests.inputs(model.requests.text(body, 100))
        np.testing.assert_allclose(probs, predict(model.export, inputs.dense, inputs.ids),
                                   rtol=0, atol=_F32_ATOL)


def test_a_full_batch_is_scored_at_once_and_a_failure_reaches_every_request() -> None:
    model = _loaded(1)
    rows = model.requests.text("\n".join(criteo_rows(3, np.random.default_rng(0))).encode(), 9)

    async def run() -> tuple[list[object], MicroBatcher]:
        batcher = MicroBatcher(max_rows=6)
        first, second = batcher.score(model, rows), batcher.score(model, rows)
        assert first.done() and second.done()  # 6 rows: flushed without waiting for the loop
        broken = _loaded(3)
        object.__setattr__(broken, "scorer", _Failing())
        bad, worse = batcher.score(broken, rows), batcher.score(broken, rows)
        outcomes = await asyncio.gather(first, second, bad, worse, return_exceptions=True)
        return outcomes, batcher

    outcomes, _ = asyncio.run(run())
    assert all(isinstance(o, np.ndarray) and len(o) == 3 for o in outcomes[:2])
    assert all(isinstance(o, RuntimeError) for o in outcomes[2:]), outcomes[2:]


class _Failing:
    def predict(self, x: object, ids: object) -> None:
        raise RuntimeError("broken scorer")
