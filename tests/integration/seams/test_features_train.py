"""Seam: the real features worker's stored blocks into the real trainer (and the trainer's
checkpoint state into `freshrec evaluate`), on the real broker, redis-server and MLflow.

The events come from the real ingest: nothing crossing a stage boundary is built by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from stages.common.reference_model import predict as reference_predict
from stages.common.samples import SampleBatch
from stages.common.settings import CommonSettings, load_settings
from stages.common.trainer_state import CheckpointState
from stages.features.readback import read_blocks
from stages.features.runner import run_features
from stages.features.settings import FeaturesSettings
from stages.ingest.run import run_ingest
from stages.ingest.settings import IngestSettings
from stages.publish.evaluate import load_checkpoint_dir
from stages.train.checkpoint import STATE_FILE, Checkpoints
from stages.train.core.engine_protocol import EngineConfig, TrainResult
from stages.train.loop import run_trainer
from stages.train.settings import TrainSettings
from tests.unit.train.core.numpy_engine import NumpyLogisticEngine

pytestmark = pytest.mark.integration


class RecordingEngine(NumpyLogisticEngine):
    """The NumPy test engine, keeping every batch it was asked to train, in order."""

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.batches: list[SampleBatch] = []

    def train(self, batch: SampleBatch, batch_size: int | None = None) -> TrainResult:
        self.batches.append(batch)
        return super().train(batch, batch_size)


class Factory:
    def __init__(self) -> None:
        self.engine: RecordingEngine | None = None

    def __call__(self, config: EngineConfig) -> RecordingEngine:
        self.engine = RecordingEngine(config)
        return self.engine


def _windows(block_rows: list[int], window: int) -> int:
    """How many windows the trainer's rule makes of these blocks (whole blocks, a window closes
    at >= `window` rows; a partial last one closes on time)."""
    count, rows = 0, 0
    for n in block_rows:
        rows += n
        if rows >= window:
            count, rows = count + 1, 0
    return count + (rows > 0)


def _train_settings(window: int) -> TrainSettings:
    values: dict[str, Any] = {
        "model_type": "wide_deep", "embedding_dim": 2, "hidden_units": (4,),
        "batch_size": 64, "learning_rate": 0.05, "window_samples": window,
        "window_seconds": 3.0, "checkpoint_every": 2, "export_every": 2,
        "full_export_every": 2, "consumer_name": "seam-trainer",
    }
    return TrainSettings(**values)


def test_the_trainer_trains_exactly_the_stored_samples(
    criteo_tiny: Path, tmp_path: Path, make_settings: Callable[..., CommonSettings]
) -> None:
    common = make_settings("kafka", "redis", "mlflow", checkpoint_dir=tmp_path / "checkpoints")
    ingested = run_ingest(common, load_settings(IngestSettings, linger_ms=5), criteo_tiny,
                          progress=False)
    assert ingested.sent == ingested.read == 1000
    features = load_settings(
        FeaturesSettings,
        group=f"{common.redis_namespace}-features",
        dlq_topic=f"{common.redis_namespace}.features.dlq",
        batch_max=300,
    )
    stored = run_features(common, features, max_idle_s=5)
    assert stored.samples_out == 1000

    client = redis.Redis.from_url(common.redis_url)
    blocks = read_blocks(client, common.redis_namespace)
    client.close()
    expected = SampleBatch.concat([b.samples for b in blocks])
    assert len(expected) == 1000 and len(blocks) > 2
    windows = _windows([len(b.samples) for b in blocks], 400)

    factory = Factory()
    summary = run_trainer(
        common, _train_settings(400), replay=None, max_windows=windows, engine_factory=factory
    )
    assert summary.windows == windows and summary.samples == 1000 and summary.missed_blocks == 0
    assert factory.engine is not None
    trained = SampleBatch.concat(factory.engine.batches)
    # exactly the stored samples, each once, in stream order
    np.testing.assert_array_equal(trained.label, expected.label)
    np.testing.assert_array_equal(trained.ids, expected.ids)
    np.testing.assert_array_equal(trained.dense, expected.dense)
    np.testing.assert_array_equal(trained.event_time_ms, expected.event_time_ms)
    assert summary.last_report is not None and math.isfinite(summary.last_report.metrics.logloss)

    # the checkpoint state the trainer wrote is the contract evaluate reads ...
    latest = Checkpoints(common.checkpoints).latest()
    assert latest is not None
    state = CheckpointState.parse((latest[0] / STATE_FILE).read_bytes())
    assert (state.samples, state.window, state.store.seq) == (1000, windows, blocks[-1].seq)
    assert state.run_id == summary.run_id and state.export_seq == summary.export_seq
    # ... and evaluate finds the trainer's exports in MLflow through it
    model = load_checkpoint_dir(common, common.checkpoints)
    np.testing.assert_allclose(
        reference_predict(model, expected.dense, expected.ids),
        factory.engine.predict(expected),
        atol=1e-5,
    )
