"""`freshrec publish --once`, `freshrec publish rollback` and `freshrec serve --help` through
the real command-line application, against a real MLflow server."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import create_app
from stages.common.model_export import ModelSpec
from stages.common.settings import CommonSettings
from stages.publish.registry import Registry
from stages.publish.synthetic import delta_export, full_export, synthetic_meta

pytestmark = pytest.mark.integration


def _env(common: CommonSettings) -> dict[str, str]:
    return {"FRESHREC_MLFLOW_TRACKING_URI": common.mlflow_tracking_uri,
            "FRESHREC_MLFLOW_EXPERIMENT": common.mlflow_experiment,
            "FRESHREC_MODEL_NAME": common.model_name,
            "FRESHREC_STATE_DIR": str(common.state_dir)}


def test_publish_and_rollback_commands(common: CommonSettings, new_trainer_run: Any) -> None:
    rng = np.random.default_rng(0)
    run = new_trainer_run()
    model = full_export(ModelSpec("wide_deep", 2, (4,)), rng, n_rows=30,
                        meta=synthetic_meta(1, 0.7))
    app, runner = create_app(), CliRunner()
    run.log(model)
    first = runner.invoke(app, ["publish", "--once"], env=_env(common))
    assert first.exit_code == 0, first.output
    assert json.loads(first.output.strip().splitlines()[-1])["versions"] == [1]
    run.log(delta_export(model, rng, meta=synthetic_meta(2, 0.71)))
    assert runner.invoke(app, ["publish", "--once"], env=_env(common)).exit_code == 0
    assert Registry(common).alias_version("production") == 2
    back = runner.invoke(app, ["publish", "rollback"], env=_env(common))
    assert back.exit_code == 0, back.output
    assert json.loads(back.output.strip().splitlines()[-1]) == {"production": {"from": 2, "to": 1}}
    assert Registry(common).alias_version("production") == 1
    again = runner.invoke(app, ["publish", "rollback"], env=_env(common))
    assert again.exit_code != 0
    assert "no earlier production version" in str(again.exception)


def test_serve_help() -> None:
    result = CliRunner().invoke(create_app(), ["serve", "--help"])
    assert result.exit_code == 0 and "--alias" in result.output
