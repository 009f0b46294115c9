"""A version is a plain MLflow pyfunc model (raw rows or I1..C26 columns in), and `freshrec evaluate` scores a labelled file with a registry version or exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stages.common.criteo import CAT_NAMES, DENSE_NAMES
from stages.common.model_export import ModelExport, ModelSpec, apply_delta, write_export
from stages.common.reference_model import predict
from stages.common.settings import CommonSettings
from stages.publish.core.requests import text_to_inputs
from stages.publish.evaluate import evaluate_file, load_model
from stages.publish.publisher import run_publisher
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import criteo_rows, delta_export, full_export

pytestmark = pytest.mark.integration
SPEC = ModelSpec("wide_deep", 4, (8,))
ROWS = criteo_rows(20, np.random.default_rng(21))


def _published(common: CommonSettings, run: Any) -> ModelExport:
    model = full_export(SPEC, np.random.default_rng(5))
    run.log(model)
    run_publisher(common, PublishSettings(), once=True)
    return model


def _expected(model: ModelExport) -> np.ndarray:
    inputs = text_to_inputs("\n".join(ROWS).encode(), 100)
    return predict(model, inputs.dense, inputs.ids)


def test_pyfunc_load_model_takes_raw_rows(common: CommonSettings, new_trainer_run: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.pyfunc

    model = _published(common, new_trainer_run())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", common.mlflow_tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{common.model_name}@production")
    raw = pd.DataFrame({"row": ROWS})  # raw rows travel in the signature's `row` column
    np.testing.assert_allclose(pyfunc.predict(raw), _expected(model), atol=1e-5)
    columns = ["label", *DENSE_NAMES, *CAT_NAMES]
    frame = pd.DataFrame([[v or None for v in r.split("\t")] for r in ROWS], columns=columns)
    for name in DENSE_NAMES:
        frame[name] = pd.to_numeric(frame[name]).astype("float64")
    np.testing.assert_allclose(pyfunc.predict(frame), _expected(model), atol=1e-5)


# `mlflow models serve` of a delta version: tests/integration/publish/test_plain_mlflow.py


def test_evaluate_registry_version_export_and_checkpoint_dirs(
    common: CommonSettings, new_trainer_run: Any, tmp_path: Path, criteo_tiny: Path
) -> None:
    model = _published(common, new_trainer_run())
    loaded = load_model(common, f"models:/{common.model_name}@production")
    metrics, skipped = evaluate_file(loaded, criteo_tiny)
    assert metrics.count + skipped == 1000 and 0 < metrics.logloss and metrics.auc is not None
    # a directory of exports: the newest full one plus the deltas after it
    delta = delta_export(model, np.random.default_rng(9), change=0.5)
    write_export(model, tmp_path / "exports" / "00000001")
    write_export(delta, tmp_path / "exports" / "00000002")
    by_dir = load_model(common, str(tmp_path / "exports"))
    np.testing.assert_array_equal(by_dir.export.rows, apply_delta(model, delta).rows)
    # a trainer checkpoint directory is evaluated from the real trainer's state.json in
    # tests/integration/seams/test_features_train.py
    env = {"FRESHREC_MLFLOW_TRACKING_URI": common.mlflow_tracking_uri}
    from flows.cli import create_app

    result = CliRunner().invoke(
        create_app(), ["evaluate", "--model", f"models:/{common.model_name}/1", "--data",
                       str(criteo_tiny)], env=env,
    )
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["auc"] == pytest.approx(metrics.auc) and line["count"] == metrics.count
    assert {"logloss", "ne", "calibration"} <= set(line)
