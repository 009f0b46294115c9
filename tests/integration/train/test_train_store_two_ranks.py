"""`freshrec train` under horovodrun with 2 ranks (Gloo, CPU) on a real Redis store: both ranks
read the same blocks, train disjoint halves of each window, checkpoint their shards together."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stages.common.settings import CommonSettings
from stages.train.checkpoint import ENGINE_DIR, Checkpoints
from tests.integration.train.conftest import REPO, write_blocks

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"


@pytest.mark.skipif(not HOROVODRUN.is_file(), reason="horovodrun is not installed")
def test_two_ranks_share_windows_and_checkpoint(common: CommonSettings) -> None:
    write_blocks(common.redis_url, common.redis_namespace, 1, 10, 100)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TF_USE_LEGACY_KERAS": "1",
        "FRESHREC_REDIS_URL": common.redis_url,
        "FRESHREC_REDIS_NAMESPACE": common.redis_namespace,
        "FRESHREC_MLFLOW_TRACKING_URI": common.mlflow_tracking_uri,
        "FRESHREC_MLFLOW_EXPERIMENT": common.mlflow_experiment,
        "FRESHREC_CHECKPOINT_DIR": str(common.checkpoints),
        "FRESHREC_TRAIN_WINDOW_SAMPLES": "200",
        "FRESHREC_TRAIN_EMBEDDING_DIM": "4",
        "FRESHREC_TRAIN_HIDDEN_UNITS": "8",
        "FRESHREC_TRAIN_CHECKPOINT_EVERY": "2",
        "FRESHREC_TRAIN_EXPORT_EVERY": "2",
    }
    cmd = [
        str(HOROVODRUN), "-np", "2", "--gloo", "-H", "localhost:2",
        sys.executable, "-m", "flows.cli", "train", "--max-windows", "3",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=400)
    out = done.stdout.decode()
    assert done.returncode == 0, (out + done.stderr.decode())[-4000:]
    windows = [line.split("<stdout>:")[-1] for line in out.splitlines() if "window " in line]
    assert [w.split()[1:3] for w in windows] == [["1", "n=200"], ["2", "n=200"], ["3", "n=200"]]
    latest = Checkpoints(common.checkpoints).latest()
    assert latest is not None
    path, state = latest
    assert (state.window, state.samples, state.store.seq, state.world_size) == (3, 600, 6, 2)
    assert sorted(p.name for p in (path / ENGINE_DIR).iterdir()) == ["rank_0", "rank_1"]
