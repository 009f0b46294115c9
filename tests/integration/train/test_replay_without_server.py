"""`freshrec train --replay FILE` as a user runs it without a tracking server: a one-line error
within seconds (never minutes of HTTP retries), and a local store when the user names one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.services.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FRESHREC = str(Path(sys.executable).with_name("freshrec"))


def _env(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRESHREC_", "MLFLOW_"))}
    return {**env, "FRESHREC_STATE_DIR": str(tmp_path / "state"),
            "FRESHREC_MLFLOW_TRACKING_URI": tracking_uri, "TF_USE_LEGACY_KERAS": "1"}


def test_no_server_fails_in_seconds_with_one_line(tmp_path: Path, criteo_tiny: Path) -> None:
    uri = f"http://user:s3cret-pw@127.0.0.1:{free_port()}"
    began = time.monotonic()
    done = subprocess.run([FRESHREC, "train", "--replay", str(criteo_tiny)],
                          env=_env(tmp_path, uri), capture_output=True, text=True, timeout=60)
    took = time.monotonic() - began
    assert done.returncode == 2, done.stderr[-2000:]
    assert took < 10, f"took {took:.1f} s"
    errors = [line for line in done.stderr.splitlines() if line.startswith("freshrec: error:")]
    assert len(errors) == 1 and "FRESHREC_MLFLOW_TRACKING_URI" in errors[0]
    assert "s3cret-pw" not in done.stderr + done.stdout


def test_a_local_store_under_the_state_dir(tmp_path: Path, criteo_tiny: Path) -> None:
    from mlflow.tracking import MlflowClient

    from stages.common.model_export import TAG_EXPORT_SEQ

    uri = f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    (tmp_path / "state").mkdir()
    done = subprocess.run([FRESHREC, "train", "--replay", str(criteo_tiny)],
                          env=_env(tmp_path, uri), capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("freshrec").experiment_id])
    assert len(runs) == 1 and int(runs[0].data.tags[TAG_EXPORT_SEQ]) >= 1
