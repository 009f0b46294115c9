"""The publish stage's integration fixtures: settings on the shared MLflow server
(tests/integration/conftest.py) and the trainer's side of the MLflow hand-off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stages.common.model_export import TAG_EXPORT_SEQ, TAG_ROLE, ModelExport, artifact_path, write_export
from stages.common.settings import CommonSettings


@pytest.fixture
def common(mlflow_server: str, make_settings: Callable[..., CommonSettings]) -> CommonSettings:
    """Settings with the session's MLflow server and this test's own experiment, registered
    model and state directory (naming `mlflow_server` lets the session start it early)."""
    return make_settings("mlflow")


class TrainerRun:
    """Plays the trainer's side of the MLflow hand-off (model_export.py) for one run."""

    def __init__(self, common: CommonSettings, work: Path) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=common.mlflow_tracking_uri)
        exp = self.client.get_experiment_by_name(common.mlflow_experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            common.mlflow_experiment)
        self.run_id = self.client.create_run(exp_id, tags={TAG_ROLE: "trainer"}).info.run_id
        self.work = work

    def log(self, export: ModelExport) -> None:
        directory = write_export(export, self.work / f"{self.run_id}-{export.export_seq}")
        self.client.log_artifacts(self.run_id, str(directory), artifact_path(export.export_seq))
        self.client.set_tag(self.run_id, TAG_EXPORT_SEQ, str(export.export_seq))


@pytest.fixture
def new_trainer_run(common: CommonSettings, tmp_path: Path) -> Callable[[], TrainerRun]:
    """Start a trainer run (call again to simulate a trainer restart)."""
    return lambda: TrainerRun(common, tmp_path / "trainer")
