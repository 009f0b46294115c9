"""The train stage's integration fixtures: settings on the real services of
tests/integration/conftest.py, and helpers that fill the sample store like the features stage.
Each test isolates itself with its own Redis namespace, MLflow experiment and checkpoint dir.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stages.common import keys
from stages.common.samples import SampleBatch, SourceRange, encode_block
from stages.common.schema import load_schema
from stages.common.settings import CommonSettings

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def common(
    redis_server: str,
    mlflow_server: str,
    make_settings: Callable[..., CommonSettings],
    tmp_path: Path,
) -> CommonSettings:
    """Settings pointing at the session's Redis and MLflow (tests/integration/conftest.py),
    with this test's own namespace, experiment and checkpoint directory."""
    return make_settings("redis", "mlflow", checkpoint_dir=tmp_path / "checkpoints")


def synthetic_samples(n: int, first_row: int, seed: int = 0) -> SampleBatch:
    """n learnable samples; event_time_ms is the global row number (first_row, first_row+1...)
    so a test can tell exactly which rows a model was trained on."""
    rng = np.random.default_rng(seed + first_row)
    ids = rng.integers(0, 50, size=(n, 26)).astype(np.uint64) + (np.arange(26, dtype=np.uint64) << 32)
    dense = rng.normal(size=(n, 13)).astype(np.float32)
    logit = dense[:, 0] * 1.5 + (ids[:, 0] % 50 < 10) * 2.0 - 1.0
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.uint8)
    ts = np.arange(first_row, first_row + n, dtype=np.int64)
    return SampleBatch(label, dense, ids, ts)


def write_blocks(
    redis_url: str, namespace: str, first_seq: int, count: int, rows: int,
    make: Callable[[int, int], SampleBatch] = synthetic_samples, schema: str = "criteo",
) -> list[str]:
    """XADD `count` blocks of `rows` samples (`make(rows, first_row)`, Criteo-layout
    `synthetic_samples` by default) of feature schema `schema` with seq first_seq.., as the
    features stage would; block seq s holds rows (s-1)*rows .. s*rows-1. Returns the stream
    entry ids."""
    import redis

    schema_hash = load_schema(schema).schema_hash
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline()
    for seq in range(first_seq, first_seq + count):
        samples = make(rows, (seq - 1) * rows)
        source = SourceRange("events", 0, (seq - 1) * rows, seq * rows - 1)
        block = encode_block(samples, source, schema_hash, seq=seq)
        pipe.xadd(keys.samples_stream(namespace), block)
    pipe.set(keys.samples_seq(namespace), first_seq + count - 1)
    ids = [i.decode() for i in pipe.execute()[:-1]]
    client.close()
    return ids
