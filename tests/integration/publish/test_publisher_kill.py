"""A publisher stopped between creating a version and its gate never registers that
publish_seq twice: SIGKILLed there (a real `freshrec publish` process) and restarted, or failing
there in-process and retried, it adopts the version, decides its gate and goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.common.errors import ServiceUnavailable
from stages.common.model_export import ModelSpec, apply_delta
from stages.common.settings import CommonSettings
from stages.publish.core import plan
from stages.publish.publisher import TEST_PAUSE_ENV, Publisher, PublishSummary
from stages.publish.registry import Registry
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import delta_export, full_export, synthetic_meta

pytestmark = pytest.mark.integration
SPEC = ModelSpec("wide_deep", 2, (4,))
REPO = Path(__file__).resolve().parents[3]


def _env(common: CommonSettings, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO),
            "FRESHREC_MLFLOW_TRACKING_URI": common.mlflow_tracking_uri,
            "FRESHREC_MLFLOW_EXPERIMENT": common.mlflow_experiment,
            "FRESHREC_MODEL_NAME": common.model_name,
            "FRESHREC_STATE_DIR": str(common.state_dir), **extra}


def _publish_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from flows.cli import main; main()", "publish", *args]


def _seqs(registry: Registry) -> list[int]:
    found = registry.client.search_model_versions(f"name = '{registry.name}'")
    return sorted(int(mv.tags[plan.T_PUBLISH_SEQ]) for mv in found)


def test_sigkill_between_register_and_promote(common: CommonSettings, new_trainer_run: Any,
                                              tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    run = new_trainer_run()
    model = full_export(SPEC, rng, n_rows=30, meta=synthetic_meta(1, 0.70))
    run.log(model)
    log = tmp_path / "publisher.log"
    proc = subprocess.Popen(_publish_cmd("--interval", "0.5"), cwd=REPO,
                            env=_env(common, **{TEST_PAUSE_ENV: "300"}),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    registry = Registry(common)
    try:
        deadline = time.monotonic() + 120
        while registry.find_version(1) is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # after create_model_version, before the gate
    finally:
        proc.kill()
        proc.wait()
    found = registry.find_version(1)
    assert found is not None and plan.T_GATE not in found[1]
    assert registry.alias_version("production") is None
    # the trainer goes on meanwhile; then the publisher is started again
    run.log(delta_export(model, rng, meta=synthetic_meta(2, 0.71)))
    again = subprocess.run(_publish_cmd("--once"), cwd=REPO, env=_env(common),
                           capture_output=True, timeout=180)
    assert again.returncode == 0, again.stdout.decode() + again.stderr.decode()
    summary = json.loads(again.stdout.decode().strip().splitlines()[-1])
    assert summary["versions"] == [2] and summary["promoted"] == [1, 2]
    assert _seqs(registry) == [1, 2]  # no publish_seq registered twice
    assert registry.version_tags(1)[plan.T_GATE].startswith("passed")
    assert registry.version_tags(2)[plan.T_GATE].startswith("passed")
    assert registry.alias_version("production") == 2
    # a third start finds nothing to do and registers nothing
    third = subprocess.run(_publish_cmd("--once"), cwd=REPO, env=_env(common),
                           capture_output=True, timeout=180)
    assert third.returncode == 0, third.stderr.decode()
    assert json.loads(third.stdout.decode().strip().splitlines()[-1])["versions"] == []
    assert _seqs(registry) == [1, 2]


def test_failure_after_create_is_adopted_by_the_next_cycle(
    common: CommonSettings, new_trainer_run: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(1)
    run = new_trainer_run()
    model = full_export(SPEC, rng, n_rows=30, meta=synthetic_meta(1, 0.70))
    delta = delta_export(model, rng, meta=synthetic_meta(2, 0.71))
    run.log(model)
    registry = Registry(common)
    real_promote = registry.promote
    calls = []

    def promote_then_outage(version: int) -> None:
        calls.append(version)
        if len(calls) == 1:  # MLflow goes away right after the version was created
            run.log(delta)  # and the trainer exports meanwhile
            raise ServiceUnavailable("MLflow went away (injected)")
        real_promote(version)

    monkeypatch.setattr(registry, "promote", promote_then_outage)
    publisher = Publisher(registry, PublishSettings(gate_tolerance=0.01), tmp_path / "work")
    (tmp_path / "work").mkdir()
    summary = PublishSummary()
    publisher.restore(summary)
    with pytest.raises(ServiceUnavailable):
        publisher.cycle(summary)
    assert _seqs(registry) == [1]
    assert publisher.cycle(summary) == 1  # folds export 2, finds seq 1 registered: adopts v1
    assert _seqs(registry) == [1]
    assert publisher.cycle(summary) == 2  # export 2 folded again onto v1
    assert _seqs(registry) == [1, 2]
    assert calls == [1, 1, 2] and registry.alias_version("production") == 2
    info = registry.version_info(2)
    assert (info.kind, info.export_seq, info.base_version) == ("delta", 2, 1)
    served = registry.materialize(2, tmp_path / "work")
    expected = apply_delta(model, delta)
    np.testing.assert_array_equal(served.ids, np.sort(expected.ids))
