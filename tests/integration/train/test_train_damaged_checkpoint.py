"""Chaos: the newest checkpoint is truncated (a crash or a full disk). The real trainer restarts
from the one before, with a log line, instead of crash-looping, and retrains only the rows after
that checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stages.common.settings import CommonSettings
from stages.train.checkpoint import Checkpoints
from stages.train.loop import run_trainer
from stages.train.settings import TrainSettings
from tests.unit.train.core.numpy_engine import NumpyLogisticEngine

pytestmark = pytest.mark.integration


def test_a_truncated_checkpoint_falls_back(
    mlflow_server: str, make_settings: Callable[..., CommonSettings], criteo_tiny: Path,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    common = make_settings("mlflow", checkpoint_dir=tmp_path / "ckpt")
    settings = TrainSettings(window_samples=200, checkpoint_every=1, export_every=1,
                             checkpoints_kept=3)
    first = run_trainer(common, settings, replay=criteo_tiny, max_windows=4,
                        engine_factory=NumpyLogisticEngine, out=lambda _: None)
    assert first.last_window == 4
    newest = sorted((tmp_path / "ckpt").glob("ckpt-*"))[-1]
    arrays = sorted(p for p in (newest / "engine").rglob("*") if p.is_file())
    assert arrays, "the engine saved nothing"
    arrays[-1].write_bytes(arrays[-1].read_bytes()[:7])

    second = run_trainer(common, settings, replay=criteo_tiny,
                         engine_factory=NumpyLogisticEngine, out=lambda _: None)
    assert "ckpt-0000000004 is damaged" in caplog.text and "falling back" in caplog.text
    # restored at window 3: rows 601..1000 are trained (window 4 again, then window 5)
    assert second.samples == 400 and second.last_window == 5
    latest = Checkpoints(tmp_path / "ckpt").latest()
    assert latest is not None and latest[1].window == 5 and latest[1].replay_rows == 1000
