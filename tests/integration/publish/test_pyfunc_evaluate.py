"""A version is a plain MLflow pyfunc model (raw rows or its schema's field columns in), and
`freshrec evaluate` scores a labelled file in the model's schema's format with a registry
version or exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stages.common.model_export import ModelExport, ModelSpec, apply_delta, write_export
from stages.common.reference_model import predict
from stages.common.schema import SchemaError, load_schema
from stages.common.settings import CommonSettings
from stages.publish.core.metrics import evaluate_predictions
from stages.publish.core.requests import RequestParser, text_to_inputs
from stages.publish.evaluate import evaluate_file, load_model
from stages.publish.publisher import run_publisher
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import (
    criteo_rows, delta_export, full_export, schema_export, schema_rows, synthetic_records,
)

pytestmark = pytest.mark.integration
SPEC = ModelSpec("wide_deep", 4, (8,))
ROWS = criteo_rows(20, np.random.default_rng(21))
CRITEO = load_schema("criteo")
DENSE_NAMES = [f.name for f in CRITEO.dense]
CAT_NAMES = [f.name for f in CRITEO.categorical]


def _published(common: CommonSettings, run: Any) -> ModelExport:
    model = full_export(SPEC, np.random.default_rng(5))
    run.log(model)
    run_publisher(common, PublishSettings(), once=True)
    return model


def _expected(model: ModelExport) -> np.ndarray:
    inputs = text_to_inputs("\n".join(ROWS).encode(), 100, RequestParser(CRITEO))
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


def test_evaluate_an_ecommerce_export_on_json_lines(common: CommonSettings, tmp_path: Path
                                                   ) -> None:
    """An export of the ecommerce preset, rows as JSON lines (one malformed): the schema is
    the preset of the export's hash, with no FRESHREC_SCHEMA."""
    shop = load_schema("ecommerce")
    model = schema_export(shop, np.random.default_rng(41))
    write_export(model, tmp_path / "export")
    labels = [i % 2 for i in range(40)]
    records = synthetic_records(shop, 40, np.random.default_rng(42))
    rows = schema_rows(shop, records, labels)
    data = tmp_path / "events.jsonl"
    data.write_text("\n".join([*rows[:10], "{not json", *rows[10:]]) + "\n")
    loaded = load_model(CommonSettings(mlflow_tracking_uri=common.mlflow_tracking_uri),
                        str(tmp_path / "export"))
    assert loaded.schema == shop
    told = CommonSettings(mlflow_tracking_uri=common.mlflow_tracking_uri, feature_schema="criteo")
    with pytest.raises(SchemaError, match="but FRESHREC_SCHEMA names criteo@"):
        load_model(told, str(tmp_path / "export"))
    metrics, skipped = evaluate_file(loaded, data)
    parser = RequestParser(shop)
    inputs = parser.inputs(parser.records(records, 100))
    want = evaluate_predictions(np.asarray(labels, np.int8),
                                predict(model, inputs.dense, inputs.ids))
    assert skipped == 1 and metrics.count == 40
    assert metrics.auc == pytest.approx(want.auc) and metrics.logloss == pytest.approx(
        want.logloss)
