"""A real trainer run read back the way a user reads it, through the MLflow client: the source
commit, the version, the description, the settings as params, one dataset input per export
(the replay file, its sha256 and the rows of the export's windows) and the plots."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from stages.common.settings import CommonSettings
from stages.train.loop import run_trainer
from stages.train.settings import TrainSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]
PNG = b"\x89PNG\r\n\x1a\n"


def test_a_replay_run_carries_commit_inputs_description_and_plots(
    mlflow_server: str, make_settings: Callable[..., CommonSettings], tmp_path: Path,
    criteo_tiny: Path,
) -> None:
    common = make_settings("mlflow", checkpoint_dir=tmp_path / "checkpoints")
    settings = TrainSettings(
        model_type="wide_deep", embedding_dim=4, hidden_units=(8,), batch_size=50,
        window_samples=100, export_every=3, checkpoint_every=5, plot_every=4,
        consumer_name="lineage-test",
    )
    lines: list[str] = []
    summary = run_trainer(common, settings, replay=criteo_tiny, out=lines.append)
    assert summary.windows == 10 and summary.export_seq == 4  # windows 3, 6, 9 and the end
    client = MlflowClient(common.mlflow_tracking_uri)
    run = client.get_run(summary.run_id or "")
    tags, params = run.data.tags, run.data.params

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head
    assert tags["freshrec.version"]
    note = tags["mlflow.note.content"]
    assert "lineage-test" in note and "wide_deep" in note and str(criteo_tiny) in note
    assert params["model_type"] == "wide_deep" and params["window_samples"] == "100"
    assert params["topic_events"] == common.topic_events
    assert params["redis_namespace"] == common.redis_namespace
    assert params["model_name"] == common.model_name
    assert params["mlflow_experiment"] == common.mlflow_experiment

    sha = hashlib.sha256(criteo_tiny.read_bytes()).hexdigest()
    inputs = sorted(run.inputs.dataset_inputs,
                    key=lambda i: int({t.key: t.value for t in i.tags}["freshrec.export_seq"]))
    assert len(inputs) == 4
    rows, windows = [], []
    for item in inputs:
        assert {t.key: t.value for t in item.tags}["mlflow.data.context"] == "training"
        dataset = item.dataset
        assert dataset.name == criteo_tiny.name and dataset.source_type == "local"
        source = json.loads(dataset.source)
        assert source["uri"] == criteo_tiny.resolve().as_uri() and source["sha256"] == sha
        rows.append(tuple(source["rows"]))
        windows.append(tuple(json.loads(dataset.profile)["windows"]))
    assert rows == [(1, 300), (301, 600), (601, 900), (901, 1000)]
    assert windows == [(1, 3), (4, 6), (7, 9), (10, 10)]
    assert len({i.dataset.digest for i in inputs}) == 4

    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/progressive_metrics.png", "plots/table_size.png"}
    local = Path(client.download_artifacts(run.info.run_id, "plots", str(tmp_path)))
    for name in ("progressive_metrics.png", "table_size.png"):
        assert (local / name).read_bytes().startswith(PNG)
