"""`freshrec settings`: every setting with its variable, secrets masked, typos flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import create_app
from flows.settings_cmd import unknown_variables


def test_settings_are_listed_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"FRESHREC_MLFLOW_TRACKING_URI": "http://me:hunter2-pw@mlflow:5000",
           "FRESHREC_REDIS_PASSWORD": "s3cret-pw", "FRESHREC_TRAIN_BATCH_SZE": "64"}
    result = CliRunner().invoke(create_app(), ["settings", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert "hunter2-pw" not in result.output and "s3cret-pw" not in result.output
    rows = {r["variable"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["FRESHREC_MLFLOW_TRACKING_URI"]["value"] == "http://me:***@mlflow:5000"
    assert rows["FRESHREC_REDIS_PASSWORD"] == {
        "section": "common", "variable": "FRESHREC_REDIS_PASSWORD", "value": "**********",
        "source": "set"}
    assert rows["FRESHREC_TRAIN_BATCH_SIZE"]["source"] == "default"
    assert "PREFECT_API_URL" in rows
    assert "FRESHREC_TRAIN_BATCH_SZE is set but no setting reads it" in result.output


def test_unknown_variables() -> None:
    env = {"FRESHREC_KAFKA_BOOTSTRAP": "h:1", "FRESHREC_LOG_LEVEL": "DEBUG",
           "FRESHREC_FEATURES_BATCH_MAX": "5", "FRESHREC_KAFKA_BOOTSTRAPS": "h:1", "OTHER": "1"}
    assert unknown_variables(env) == ["FRESHREC_KAFKA_BOOTSTRAPS"]
