"""The trainer with the real TFEngine: store windows, restart from a checkpoint, exports that
predict like the restored engine, and `freshrec train --replay` as a command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tests.unit.train.engine import layouts

from stages.common.model_export import TAG_EXPORT_SEQ, apply_delta, read_export
from stages.common.reference_model import predict as reference_predict
from stages.common.samples import SampleBatch
from stages.common.schema import SchemaError, load_schema
from stages.common.settings import CommonSettings
from stages.train.checkpoint import ENGINE_DIR, Checkpoints
from stages.train.loop import run_trainer
from stages.train.settings import TrainSettings
from tests.integration.train.conftest import REPO, synthetic_samples, write_blocks

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _settings() -> TrainSettings:
    return TrainSettings(
        model_type="wide_deep", embedding_dim=4, hidden_units=(8,), batch_size=64,
        window_samples=200, window_seconds=600.0, checkpoint_every=2, export_every=2,
        full_export_every=2, table_capacity=10_000,
    )


def test_tf_engine_through_the_loop_and_a_restart(common: CommonSettings, tmp_path: Path) -> None:
    from stages.train.engine import TFEngine

    write_blocks(common.redis_url, common.redis_namespace, 1, 10, 100)
    first = run_trainer(common, _settings(), max_windows=2, out=lambda _: None)
    assert first.windows == 2 and first.last_report is not None
    assert first.last_report.table_size > 0
    second = run_trainer(common, _settings(), max_windows=1, out=lambda _: None)
    assert second.last_window == 3 and second.run_id == first.run_id
    latest = Checkpoints(common.checkpoints).latest()
    assert latest is not None and latest[1].samples == 600 and latest[1].store.seq == 6

    client = MlflowClient(common.mlflow_tracking_uri)
    seq = int(client.get_run(second.run_id or "").data.tags[TAG_EXPORT_SEQ])
    assert seq == second.export_seq == 2
    local = client.download_artifacts(second.run_id or "", f"exports/{seq:08d}", str(tmp_path))
    export = read_export(Path(local))
    assert export.kind == "full" and export.meta["samples"] == 600

    engine = TFEngine(_settings().engine_config())
    engine.restore(latest[0] / ENGINE_DIR)
    test = synthetic_samples(300, 50_000)
    np.testing.assert_allclose(
        reference_predict(export, test.dense, test.ids), engine.predict(test), atol=1e-5
    )


def test_cli_replay_of_criteo_rows(criteo_tiny: Path, common: CommonSettings) -> None:
    env = {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "FRESHREC_MLFLOW_TRACKING_URI": common.mlflow_tracking_uri,
        "FRESHREC_MLFLOW_EXPERIMENT": common.mlflow_experiment,
        "FRESHREC_CHECKPOINT_DIR": str(common.checkpoints),
        "FRESHREC_TRAIN_WINDOW_SAMPLES": "300",
        "FRESHREC_TRAIN_EMBEDDING_DIM": "4",
        "FRESHREC_TRAIN_HIDDEN_UNITS": "8",
        "FRESHREC_TRAIN_EXPORT_EVERY": "10",
    }
    cmd = [sys.executable, "-m", "flows.cli", "train", "--replay", str(criteo_tiny)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    lines = done.stdout.decode().splitlines()
    windows = [line for line in lines if line.startswith("window ")]
    assert [w.split()[1:3] for w in windows] == [
        ["1", "n=300"], ["2", "n=300"], ["3", "n=300"], ["4", "n=100"]
    ]
    summary = json.loads(lines[-1])
    assert summary["samples"] == 1000 and summary["export_seq"] == 1
    state = Checkpoints(common.checkpoints).latest()
    assert state is not None and state[1].replay_rows == 1000
    # the same replay again is already done: it resumes at the end and trains nothing
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=240)
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    assert json.loads(again.stdout.decode().splitlines()[-1])["windows"] == 0


def test_an_ecommerce_store_trains_exports_and_refuses_another_schema(
    make_settings: Callable[..., CommonSettings], redis_server: str, mlflow_server: str,
    tmp_path: Path,
) -> None:
    """The trainer with FRESHREC_SCHEMA=ecommerce on blocks of that layout (pooled, narrow,
    wide-only inputs): its export predicts like the engine restored from its checkpoint; then a
    trainer on the Criteo schema given that checkpoint directory stops with SchemaError."""
    from stages.train.engine import TFEngine

    shop = load_schema("ecommerce")
    common = make_settings("redis", "mlflow", checkpoint_dir=tmp_path / "ck",
                           feature_schema="ecommerce")

    def make(n: int, first_row: int) -> SampleBatch:
        batch = layouts.sample(shop, np.random.default_rng(first_row), n, dim=4)
        return replace(batch, event_time_ms=np.arange(first_row, first_row + n, dtype=np.int64))

    write_blocks(common.redis_url, common.redis_namespace, 1, 6, 100, make, "ecommerce")
    done = run_trainer(common, _settings(), max_windows=3, out=lambda _: None)
    assert done.windows == 3 and done.export_seq >= 1 and done.run_id
    latest = Checkpoints(common.checkpoints).latest()
    assert latest is not None and latest[1].feature_schema == shop.schema_id
    client = MlflowClient(common.mlflow_tracking_uri)
    exports = [read_export(Path(client.download_artifacts(
        done.run_id, f"exports/{seq:08d}", str(tmp_path / str(seq))))) for seq in (1, 2)]
    assert [e.kind for e in exports] == ["full", "delta"] and done.export_seq == 2
    export = apply_delta(*exports)
    assert export.spec.schema_hash == shop.schema_hash and not export.spec.simple
    engine = TFEngine(_settings().engine_config(shop))
    engine.restore(latest[0] / ENGINE_DIR)
    test = make(300, 10_000)
    np.testing.assert_allclose(
        reference_predict(export, test.dense, test.ids), engine.predict(test), atol=1e-5
    )
    criteo = common.model_copy(update={"feature_schema": "criteo"})
    with pytest.raises(SchemaError, match=f"{shop.schema_id}.*{load_schema('criteo').schema_id}"):
        run_trainer(criteo, _settings(), max_windows=1, out=lambda _: None)
