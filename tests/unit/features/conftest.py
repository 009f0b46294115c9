"""Small synthetic events for the features core (never real Criteo rows)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stages.common.events import encode_event
from stages.common.raw import RawColumns
from stages.common.schema import FeatureSchema


def synthetic_row(rng: random.Random) -> bytes:
    """A valid Criteo-format row with random values and some missing cells."""
    label = b"1" if rng.random() < 0.25 else b"0"
    dense = [b"" if rng.random() < 0.2 else b"%d" % rng.randint(-3, 5000) for _ in range(13)]
    cats = [b"" if rng.random() < 0.15 else b"%08x" % rng.randint(0, 300) for _ in range(26)]
    return b"\t".join([label, *dense, *cats])


def synthetic_events(n: int, seed: int = 0, source: str = "unit") -> list[bytes]:
    """`n` encoded events with ids `<source>:<i>` and rows from `synthetic_row`."""
    rng = random.Random(seed)
    return [encode_event(f"{source}:{i}", 1_700_000_000_000 + i, synthetic_row(rng)) for i in range(n)]


@pytest.fixture()
def events() -> list[bytes]:
    return synthetic_events(40)


def random_raw(schema: FeatureSchema, n: int, seed: int = 0) -> RawColumns:
    """`n` random raw rows of `schema` (some values missing), as a parser would give them."""
    rng = np.random.default_rng(seed)
    d, c = len(schema.dense), len(schema.categorical)
    lens = [f.max_len for f in schema.multi]
    dense = rng.integers(-3, 5000, (n, d)).astype(np.float64)
    dense[rng.random((n, d)) < 0.2] = np.nan
    return RawColumns(
        label=(rng.random(n) < 0.25).astype(np.int8),
        dense=dense,
        cat_values=rng.integers(0, 300, (n, c)).astype(np.uint64),
        cat_missing=rng.random((n, c)) < 0.15,
        multi_values=rng.integers(0, 50, (n, sum(lens))).astype(np.uint64),
        multi_len=np.stack([rng.integers(0, k + 1, n) for k in lens], axis=1).astype(np.int32)
        if lens else np.zeros((n, 0), np.int32),
    )
