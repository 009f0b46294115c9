"""The seam trainer -> publisher with the real producer: the TensorFlow trainer's exports
(replaying real Criteo rows) registered by the real publisher on a real MLflow server.

The version tags must be numbers read from the trainer's export meta, and the quality gate must
decide on them: a window whose labels were inverted (a broken upstream) scores a progressive
AUC far below production's, so its version is registered and tagged `refused`, production stays,
and rollback still walks the production history.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

from stages.common.settings import CommonSettings
from stages.publish.core import plan
from stages.publish.publisher import run_publisher
from stages.publish.registry import Registry
from stages.publish.settings import PublishSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WINDOW = 1000


def _replay_file(criteo_sample: Path, into: Path) -> Path:
    """Rows 1..7000 of the sample as they are, then 1000 rows with every label inverted."""
    with gzip.open(criteo_sample, "rt") as handle:
        lines = [next(handle) for _ in range(8 * WINDOW)]
    broken = [("0" if line[0] == "1" else "1") + line[1:] for line in lines[7 * WINDOW:]]
    into.write_text("".join(lines[: 7 * WINDOW] + broken))
    return into


def test_the_gate_refuses_a_broken_window_of_the_real_trainer(
    mlflow_server: str,
    make_settings: Callable[..., CommonSettings],
    criteo_sample: Path,
    tmp_path: Path,
) -> None:
    from stages.train.loop import run_trainer
    from stages.train.settings import TrainSettings

    common = make_settings("mlflow", checkpoint_dir=tmp_path / "checkpoints",
                           state_dir=tmp_path / "state")
    train = TrainSettings(window_samples=WINDOW, export_every=1, checkpoint_every=1,
                          batch_size=128)
    publish = PublishSettings(gate_tolerance=0.05, full_every=5)
    replay = _replay_file(criteo_sample, tmp_path / "rows.tsv")
    registry = Registry(common)

    def train_then_publish(windows: int) -> list[int]:
        run_trainer(common, train, replay=replay, max_windows=windows, out=lambda _: None)
        return run_publisher(common, publish, once=True).versions

    assert train_then_publish(6) == [1]  # windows 1..6, folded into one version
    assert train_then_publish(1) == [2]  # window 7
    assert train_then_publish(1) == [3]  # window 8: labels inverted

    tags = {v: registry.client.get_model_version(common.model_name, str(v)).tags
            for v in (1, 2, 3)}
    assert [(int(t[plan.T_WINDOW_FIRST]), int(t[plan.T_WINDOW_LAST])) for t in tags.values()] \
        == [(1, 6), (7, 7), (8, 8)]
    assert int(tags[3][plan.T_SAMPLES]) == 8 * WINDOW
    assert int(tags[3][plan.T_REPLAY_ROWS]) == 8 * WINDOW
    aucs = {v: float(t[plan.T_AUC]) for v, t in tags.items()}
    for t in tags.values():
        float(t[plan.T_LOGLOSS])
    assert aucs[1] > 0.65 and aucs[2] > 0.65 and aucs[3] < 0.4, aucs
    assert tags[1][plan.T_GATE].startswith("passed: no production version yet")
    assert tags[2][plan.T_GATE].startswith("passed: AUC")
    assert tags[3][plan.T_GATE].startswith("refused: AUC"), tags[3][plan.T_GATE]
    assert registry.alias_version("production") == 2
    assert registry.alias_version("latest") == 3
    assert [registry.version_info(v).kind for v in (1, 2, 3)] == ["full", "delta", "delta"]
    assert registry.rollback() == (2, 1)
    assert registry.alias_version("production") == 1
