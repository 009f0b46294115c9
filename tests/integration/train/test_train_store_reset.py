"""Chaos: Redis restarts empty under a trained pipeline. The trainer must notice the reset and
train every sample stored afterwards exactly once (on main it trained 0 and logged only
"skipped 4 sample blocks with a seq already read").

Real processes: the broker, a Redis of this test's own (SIGKILLed and restarted empty on the
same port), MLflow; the real ingest and features worker fill the store.
"""

from __future__ import annotations

import gzip
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from infra.services import RunningService, free_port, start_service
from stages.common.layout import compile_layout
from stages.common.samples import SampleBatch
from stages.common.settings import CommonSettings, load_settings
from stages.features.readback import read_blocks
from stages.features.runner import run_features
from stages.features.settings import FeaturesSettings
from stages.ingest.run import run_ingest
from stages.ingest.settings import IngestSettings
from stages.train.loop import run_trainer
from stages.train.settings import TrainSettings
from tests.integration.seams.test_features_train import Factory, _train_settings, _windows

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROWS = 3000


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A Redis of this test's own, which the test may kill and restart."""
    port = free_port()
    holder: dict[str, Any] = {"port": port, "service": start_service("redis", port,
                                                                      tmp_path / "redis-1")}
    yield holder
    holder["service"].stop()


def _kill_and_restart(holder: dict[str, Any], tmp_path: Path) -> None:
    service: RunningService = holder["service"]
    os.killpg(service.pid, signal.SIGKILL)
    service.stop()  # reaps and removes the pid file
    # the same directory: the same password, and no data (the embedded Redis keeps none)
    holder["service"] = start_service("redis", holder["port"], tmp_path / "redis-1")


def _rows(criteo_sample: Path, first: int, into: Path) -> Path:
    with gzip.open(criteo_sample, "rt") as handle:
        lines = [line for _, line in zip(range(first + ROWS), handle)][first:]
    into.write_text("".join(lines))
    return into


def _stored(common: CommonSettings) -> SampleBatch:
    client = redis.Redis.from_url(common.redis_url)
    try:
        blocks = read_blocks(client, common.redis_namespace)
        return SampleBatch.concat([b.samples for b in blocks], compile_layout(common.schema(), 16))
    finally:
        client.close()


def _fill(common: CommonSettings, rows: Path) -> tuple[SampleBatch, list[int]]:
    ingested = run_ingest(common, load_settings(IngestSettings, linger_ms=5), rows,
                          progress=False)
    assert ingested.sent == ingested.read == ROWS
    features = load_settings(FeaturesSettings, group=f"{common.redis_namespace}-features",
                             dlq_topic=f"{common.redis_namespace}.features.dlq", batch_max=500)
    assert run_features(common, features, max_idle_s=5).samples_out == ROWS
    client = redis.Redis.from_url(common.redis_url)
    try:
        blocks = read_blocks(client, common.redis_namespace)
    finally:
        client.close()
    return SampleBatch.concat([b.samples for b in blocks]), [len(b.samples) for b in blocks]


def test_the_trainer_trains_every_sample_after_a_redis_restart(
    own_redis: dict[str, Any], criteo_sample: Path, tmp_path: Path,
    make_settings: Callable[..., CommonSettings],
) -> None:
    common = make_settings("kafka", "mlflow", checkpoint_dir=tmp_path / "checkpoints",
                           redis_url=own_redis["service"].url)  # with its password
    settings: TrainSettings = _train_settings(1000)

    _before, sizes = _fill(common, _rows(criteo_sample, 0, tmp_path / "a.tsv"))
    first = Factory()
    summary = run_trainer(common, settings, max_windows=_windows(sizes, 1000),
                          engine_factory=first)
    assert summary.samples == ROWS and summary.store_resets == 0

    _kill_and_restart(own_redis, tmp_path)
    assert len(_stored(common)) == 0  # the store came back empty
    after, sizes = _fill(common, _rows(criteo_sample, ROWS, tmp_path / "b.tsv"))

    second = Factory()
    summary = run_trainer(common, settings, max_windows=_windows(sizes, 1000),
                          engine_factory=second)
    assert summary.store_resets == 1
    assert summary.samples == ROWS, "every sample stored after the restart is trained"
    assert second.engine is not None
    trained = SampleBatch.concat(second.engine.batches)
    np.testing.assert_array_equal(trained.ids, after.ids)  # each once, in order
    np.testing.assert_array_equal(trained.label, after.label)
