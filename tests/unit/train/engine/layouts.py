"""Test layouts beyond Criteo's and a learnable synthetic sample of them (not a test module).

`ecommerce()` is the bundled preset: pooled (recent_items, mean over up to 5, sharing the item
table), narrow (category 8, device 4, hour buckets 4 of 16) and wide-only (two crosses) groups.
`standardized()` adds standardised dense inputs to it: price `standardize` instead of `log1p`,
and a plain `rating` column left unmarked (0/1 in the running statistics).
"""

from __future__ import annotations

import numpy as np
import yaml

from stages.common.layout import Transform, compile_layout
from stages.common.raw import RawColumns
from stages.common.samples import SampleBatch
from stages.common.schema import PRESET_DIR, FeatureSchema, load_schema, parse_schema


def ecommerce() -> FeatureSchema:
    return load_schema("ecommerce")


def standardized() -> FeatureSchema:
    data = yaml.safe_load((PRESET_DIR / "ecommerce.yaml").read_text())
    data["name"] = "ecommerce_std"
    data["dense"][0] = {**data["dense"][0], "transform": "standardize"}
    data["dense"].append({"name": "rating", "type": "float"})
    return parse_schema(data, "standardized test schema")


def sample(schema: FeatureSchema, rng: np.random.Generator, n: int, vocab: int = 60,
           dim: int = 16) -> SampleBatch:
    """`n` rows of `schema` (the ecommerce fields, plus any extra plain dense ones): Zipf ids,
    lists of 0-5 recent items, prices around 50; clicks from a fixed logistic model of item,
    category and price, so a model can learn them."""
    n_dense = len(schema.dense)
    item = rng.zipf(1.3, n).astype(np.uint64) % np.uint64(vocab)
    category = item % np.uint64(7)
    cats = np.stack([rng.integers(0, 5 * vocab, n).astype(np.uint64), item, category,
                     rng.integers(0, 3, n).astype(np.uint64)], axis=1)
    missing = rng.random(cats.shape) < 0.05
    dense = np.full((n, n_dense), np.nan)
    dense[:, 0] = rng.lognormal(3.9, 0.6, n)
    dense[:, 1] = rng.integers(0, 24, n)
    if n_dense > 2:
        dense[:, 2:] = rng.normal(3.0, 2.0, (n, n_dense - 2))
    dense[rng.random((n, n_dense)) < 0.03] = np.nan
    lengths = rng.integers(0, 6, n).astype(np.int32)
    recent = rng.zipf(1.3, (n, 5)).astype(np.uint64) % np.uint64(vocab)
    score = np.where(item % np.uint64(3) == 0, 1.5, -1.0) + 0.3 * (category.astype(float) - 3)
    score -= 0.02 * (np.nan_to_num(dense[:, 0], nan=50.0) - 50.0)
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-score))).astype(np.int8)
    raw = RawColumns(label, dense, cats, missing, recent, lengths[:, None])
    transform = Transform(schema, compile_layout(schema, dim))
    return SampleBatch(label.astype(np.uint8), transform.dense(raw), transform.ids(raw),
                       np.arange(n, dtype=np.int64))
