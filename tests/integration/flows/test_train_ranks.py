"""The train flow's `ranks` path: `horovodrun -np 2 --gloo` of `freshrec train` on this host,
its output streamed, rank 0's summary returned."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.horovod import run_ranks
from stages.common.settings import CommonSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_ranks_replay_a_file(
    mlflow_server: str, make_settings: Callable[..., CommonSettings], criteo_tiny: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    common = make_settings("mlflow")
    # the ranks are processes of their own: they read their settings from the environment
    monkeypatch.setenv("FRESHREC_MLFLOW_TRACKING_URI", common.mlflow_tracking_uri)
    monkeypatch.setenv("FRESHREC_MLFLOW_EXPERIMENT", common.mlflow_experiment)
    monkeypatch.setenv("FRESHREC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FRESHREC_TRAIN_WINDOW_SAMPLES", "250")
    monkeypatch.setenv("FRESHREC_TRAIN_EMBEDDING_DIM", "4")
    monkeypatch.setenv("FRESHREC_TRAIN_HIDDEN_UNITS", "8")
    summary = run_ranks(2, str(criteo_tiny), None, threading.Event())
    assert summary["samples"] == 1000 and summary["windows"] == 4
    assert summary["export_seq"] >= 1 and summary["run_id"]
    assert "window 4 n=250" in capsys.readouterr().out
