"""SIGKILL the trainer mid-stream and restart it: every sample ends up in the model exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from stages.common.model_export import TAG_EXPORT_SEQ
from stages.common.settings import CommonSettings
from stages.train.checkpoint import ENGINE_DIR, Checkpoints
from tests.integration.train.conftest import REPO, write_blocks

pytestmark = pytest.mark.integration

BLOCKS, ROWS, WINDOW = 30, 50, 100  # 15 windows of 2 blocks


def _env(common: CommonSettings, delay: float) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "FRESHREC_REDIS_URL": common.redis_url,
        "FRESHREC_REDIS_NAMESPACE": common.redis_namespace,
        "FRESHREC_MLFLOW_TRACKING_URI": common.mlflow_tracking_uri,
        "FRESHREC_MLFLOW_EXPERIMENT": common.mlflow_experiment,
        "FRESHREC_CHECKPOINT_DIR": str(common.checkpoints),
        "FRESHREC_TRAIN_EMBEDDING_DIM": "2",
        "FRESHREC_TRAIN_HIDDEN_UNITS": "4",
        "FRESHREC_TRAIN_BATCH_SIZE": "64",
        "FRESHREC_TRAIN_WINDOW_SAMPLES": str(WINDOW),
        "FRESHREC_TRAIN_WINDOW_SECONDS": "600",
        "FRESHREC_TRAIN_CHECKPOINT_EVERY": "3",
        "FRESHREC_TRAIN_EXPORT_EVERY": "2",
        "FRESHREC_TRAIN_FULL_EXPORT_EVERY": "3",
        "TEST_TRAIN_DELAY": str(delay),
    }


def _trainer(common: CommonSettings, log: Path, delay: float, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.train.trainer_proc", *args],
        cwd=REPO, env=_env(common, delay), stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )


def _windows(log: Path) -> list[int]:
    return [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("window ")]


def test_sigkill_and_restart_trains_every_sample_once(common: CommonSettings, tmp_path: Path) -> None:
    write_blocks(common.redis_url, common.redis_namespace, 1, BLOCKS, ROWS)
    first_log = tmp_path / "first.log"
    proc = _trainer(common, first_log, 0.4)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _windows(first_log)
            if seen and seen[-1] >= 8:
                break
            time.sleep(0.05)
        assert proc.poll() is None, first_log.read_text()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    trained_before_kill = _windows(first_log)[-1]
    checkpoints = Checkpoints(common.checkpoints)
    latest = checkpoints.latest()
    assert latest is not None
    ckpt_window = latest[1].window
    assert ckpt_window < trained_before_kill  # some trained windows were lost with the process
    client = MlflowClient(common.mlflow_tracking_uri)
    run_id = checkpoints.read_run_id()
    assert run_id is not None
    seq_at_kill = int(client.get_run(run_id).data.tags[TAG_EXPORT_SEQ])

    second_log = tmp_path / "second.log"
    remaining = BLOCKS * ROWS // WINDOW - ckpt_window
    restarted = _trainer(common, second_log, 0.0, str(remaining))
    assert restarted.wait(timeout=180) == 0, second_log.read_text()
    assert _windows(second_log) == list(range(ckpt_window + 1, BLOCKS * ROWS // WINDOW + 1))

    final = checkpoints.latest()
    assert final is not None and final[1].window == BLOCKS * ROWS // WINDOW
    assert final[1].run_id == run_id and final[1].samples == BLOCKS * ROWS
    with np.load(final[0] / ENGINE_DIR / "state.npz") as state:
        trained = state["trained"]
    # exactly the rows of the store, each once, in order: none twice, none skipped
    np.testing.assert_array_equal(trained, np.arange(BLOCKS * ROWS))
    assert int(client.get_run(run_id).data.tags[TAG_EXPORT_SEQ]) > seq_at_kill
