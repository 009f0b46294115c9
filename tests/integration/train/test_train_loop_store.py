"""The trainer on a real Redis store and a real MLflow server, with the NumPy test double."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from mlflow.tracking import MlflowClient

from stages.common import keys
from stages.common.model_export import TAG_EXPORT_SEQ, TAG_ROLE, apply_delta, read_export
from stages.common.reference_model import predict as reference_predict
from stages.common.settings import CommonSettings
from stages.train.checkpoint import Checkpoints
from stages.train.core.engine_protocol import EngineConfig
from stages.train.loop import run_trainer
from stages.train.settings import TrainSettings
from tests.integration.train.conftest import synthetic_samples, write_blocks
from tests.unit.train.core.numpy_engine import NumpyLogisticEngine

pytestmark = pytest.mark.integration


def small_settings(**overrides: Any) -> TrainSettings:
    values: dict[str, Any] = {
        "model_type": "wide_deep", "embedding_dim": 2, "hidden_units": (4,),
        "batch_size": 64, "learning_rate": 0.1, "window_samples": 100,
        "window_seconds": 600.0, "checkpoint_every": 2, "export_every": 2,
        "full_export_every": 2, "consumer_name": "test-trainer",
    }
    values.update(overrides)
    return TrainSettings(**values)


class Factory:
    """Builds the NumPy engine and keeps it, so a test can look at its state afterwards."""

    def __init__(self) -> None:
        self.engine: NumpyLogisticEngine | None = None

    def __call__(self, config: EngineConfig) -> NumpyLogisticEngine:
        self.engine = NumpyLogisticEngine(config)
        return self.engine


def test_windows_metrics_checkpoints_and_exports(common: CommonSettings, tmp_path: Path) -> None:
    write_blocks(common.redis_url, common.redis_namespace, 1, 12, 50)
    lines: list[str] = []
    factory = Factory()
    summary = run_trainer(
        common, small_settings(), max_windows=5, engine_factory=factory, out=lines.append
    )
    assert summary.windows == 5 and summary.samples == 500 and summary.last_window == 5
    assert [line.split()[1] for line in lines] == ["1", "2", "3", "4", "5"]
    assert all(" n=100 " in line for line in lines)
    assert factory.engine is not None
    np.testing.assert_array_equal(factory.engine.trained(), np.arange(500))

    latest = Checkpoints(common.checkpoints).latest()
    assert latest is not None and latest[1].window == 5 and latest[1].store.seq == 10
    assert latest[1].samples == 500 and latest[1].run_id == summary.run_id

    client = MlflowClient(common.mlflow_tracking_uri)
    run = client.get_run(summary.run_id or "")
    assert run.data.tags[TAG_ROLE] == "trainer"
    assert run.data.tags[TAG_EXPORT_SEQ] == "3"  # windows 2 and 4, and the final one at 5
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(summary.run_id or "", "logloss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]
    assert {m.key for m in client.get_metric_history(summary.run_id or "", "auc")}

    exports = []
    for seq in (1, 2, 3):
        local = client.download_artifacts(summary.run_id or "", f"exports/{seq:08d}", str(tmp_path))
        exports.append(read_export(Path(local)))
    assert [e.kind for e in exports] == ["full", "delta", "full"]
    assert exports[2].meta["window_last"] == 5 and exports[2].meta["samples"] == 500
    rebuilt = apply_delta(exports[0], exports[1])
    test = synthetic_samples(200, 10_000)
    np.testing.assert_allclose(
        reference_predict(exports[2], test.dense, test.ids), factory.engine.predict(test), atol=1e-5
    )
    assert rebuilt.export_seq == 2


def test_restart_continues_run_position_and_export_seq(common: CommonSettings) -> None:
    write_blocks(common.redis_url, common.redis_namespace, 1, 8, 50)
    first = run_trainer(common, small_settings(), max_windows=2, engine_factory=Factory())
    factory = Factory()
    second = run_trainer(common, small_settings(), max_windows=2, engine_factory=factory)
    assert second.run_id == first.run_id
    assert second.last_window == 4 and second.export_seq == first.export_seq + 1
    assert factory.engine is not None
    np.testing.assert_array_equal(factory.engine.trained(), np.arange(400))


def test_trimmed_blocks_are_detected_and_reported(common: CommonSettings) -> None:
    ids = write_blocks(common.redis_url, common.redis_namespace, 1, 2, 50)
    run_trainer(common, small_settings(), max_windows=1, engine_factory=Factory())
    more = write_blocks(common.redis_url, common.redis_namespace, 3, 6, 50)
    client = redis.Redis.from_url(common.redis_url)
    stream = keys.samples_stream(common.redis_namespace)
    client.xtrim(stream, minid=more[2])  # retention dropped blocks 3 and 4 before the read
    assert ids  # blocks 1 and 2 were trained before the trim
    factory = Factory()
    lines: list[str] = []
    summary = run_trainer(
        common, small_settings(), max_windows=2, engine_factory=factory, out=lines.append
    )
    assert summary.missed_blocks == 2
    assert lines[0].endswith("missed=2")
    assert factory.engine is not None
    trained = factory.engine.trained()
    np.testing.assert_array_equal(trained, np.r_[np.arange(100), np.arange(200, 400)])
    counters = client.hgetall(keys.counters(common.redis_namespace))
    assert counters[b"trainer_missed_blocks"] == b"2"
    gaps = [json.loads(g) for g in client.lrange(keys.gaps(common.redis_namespace), 0, -1)]
    assert [(g["first_seq"], g["last_seq"], g["kind"]) for g in gaps] == [(3, 4, "trimmed_blocks")]
    history = MlflowClient(common.mlflow_tracking_uri).get_metric_history(
        summary.run_id or "", "missed_blocks_total"
    )
    assert max(m.value for m in history) == 2.0
    latest = Checkpoints(common.checkpoints).latest()
    assert latest is not None and latest[1].missed_blocks == 2
    # a trainer restarted from an older checkpoint finds the same gap again: recorded once
    from stages.train.core.positions import SeqGap
    from stages.train.store import SampleReader

    store = SampleReader.from_settings(common)
    store.report_gaps([SeqGap(3, 4)], "again")
    store.close()
    assert client.hget(keys.counters(common.redis_namespace), b"trainer_missed_blocks") == b"2"
    assert client.llen(keys.gaps(common.redis_namespace)) == 1
    client.close()


def test_window_closes_after_t_seconds_and_stop_is_clean(common: CommonSettings) -> None:
    write_blocks(common.redis_url, common.redis_namespace, 1, 1, 30)
    stop = threading.Event()
    lines: list[str] = []
    settings = small_settings(window_samples=10_000, window_seconds=1.0)

    def stop_after_first_window(line: str) -> None:
        lines.append(line)
        stop.set()

    started = time.monotonic()
    summary = run_trainer(
        common, settings, stop=stop, engine_factory=Factory(), out=stop_after_first_window
    )
    assert summary.windows == 1 and summary.samples == 30
    assert 0.9 <= time.monotonic() - started < 30
    latest = Checkpoints(common.checkpoints).latest()
    assert latest is not None and latest[1].store.seq == 1


def test_batch_grows_with_the_backlog_and_shrinks_back(common: CommonSettings) -> None:
    """2,000 samples wait at the start (20 windows): the mini-batch doubles up to its largest,
    and halves back toward the configured one as the backlog drains; every sample once, in order."""
    write_blocks(common.redis_url, common.redis_namespace, 1, 40, 50)
    lines: list[str] = []
    factory = Factory()
    summary = run_trainer(
        common, small_settings(batch_size=8, batch_size_max=32, checkpoint_every=100,
                               export_every=100), max_windows=20,
        engine_factory=factory, out=lines.append,
    )
    assert summary.samples == 2000
    assert factory.engine is not None
    sizes = factory.engine.batch_sizes
    assert sizes[:3] == [16, 32, 32]  # 1,900 then 1,800 samples wait: > 2 windows
    assert sizes[-2:] == [32, 16]  # fewer than a window waits after the 20th: halved
    assert max(sizes) == 32
    assert [f"batch={s}" in line for s, line in zip(sizes, lines)] == [True] * 20
    np.testing.assert_array_equal(factory.engine.trained(), np.arange(2000))


def test_checkpoints_wait_for_their_minimum_interval(common: CommonSettings) -> None:
    """Due every window, but at most one per hour: none is taken while the 6 windows train,
    only the final one at the clean end."""
    write_blocks(common.redis_url, common.redis_namespace, 1, 12, 50)
    summary = run_trainer(
        common, small_settings(checkpoint_every=1, checkpoint_min_interval_s=3600.0),
        max_windows=6, engine_factory=NumpyLogisticEngine, out=lambda _: None,
    )
    assert summary.windows == 6
    names = sorted(p.name for p in common.checkpoints.iterdir() if p.name.startswith("ckpt-"))
    assert names == ["ckpt-0000000006"]


def test_exports_wait_for_their_minimum_interval(common: CommonSettings) -> None:
    """Due every window, but at most one an hour: the first export, then only the final one."""
    write_blocks(common.redis_url, common.redis_namespace, 1, 12, 50)
    summary = run_trainer(
        common, small_settings(export_every=1, export_min_interval_s=3600.0),
        max_windows=6, engine_factory=NumpyLogisticEngine, out=lambda _: None,
    )
    assert summary.windows == 6 and summary.export_seq == 2
