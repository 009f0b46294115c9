"""A diverged model never reaches the registry or serving: the real trainer, pushed to NaN
weights by an absurd learning rate, refuses its exports (nothing uploaded), so the real publisher
registers nothing; a NaN export slipped into MLflow is refused by the publisher too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.common.model_export import TAG_EXPORT_SEQ
from stages.common.settings import CommonSettings
from stages.publish.publisher import run_publisher
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import full_export

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_diverged_trainer_exports_nothing(
    mlflow_server: str, make_settings: Callable[..., CommonSettings], criteo_tiny: Path,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from mlflow import MlflowClient

    from stages.train.loop import run_trainer
    from stages.train.settings import TrainSettings

    common = make_settings("mlflow", checkpoint_dir=tmp_path / "ckpt")
    # outside the settings' bounds on purpose: the only way to make the real model diverge
    train = TrainSettings(window_samples=250, export_every=1, batch_size=64).model_copy(
        update={"learning_rate": 1e30, "optimizer": "sgd"})
    summary = run_trainer(common, train, replay=criteo_tiny, out=lambda _: None)
    assert summary.windows >= 3
    assert "refused, not uploaded" in caplog.text and "NaN/inf" in caplog.text
    run = MlflowClient(tracking_uri=common.mlflow_tracking_uri).get_run(summary.run_id)
    assert TAG_EXPORT_SEQ not in run.data.tags
    assert run_publisher(common, PublishSettings(), once=True).versions == []


def test_the_publisher_refuses_a_nan_export(common: CommonSettings, new_trainer_run: Any) -> None:
    from stages.common.model_export import ModelSpec

    export = full_export(ModelSpec("wide_deep", 4, (8,)), np.random.default_rng(0), n_rows=20)
    export.rows[3, 1] = np.nan
    run = new_trainer_run()
    run.log(export)
    summary = run_publisher(common, PublishSettings(), once=True)
    assert summary.versions == [] and summary.refused_exports == 1
