"""Registry retention with the real publisher (keep 3) against the MLflow server and against a
local file store: after many versions the registry holds exactly the versions production,
rollback and the newest three need (with their chains), each of them still loads with
freshrec and with plain MLflow, rollback works, and the deleted versions' artifacts and the
folded trainer exports are gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.common.errors import ContractError
from stages.common.model_export import ModelExport, ModelSpec, apply_delta
from stages.common.settings import CommonSettings
from stages.publish.core import plan
from stages.publish.publisher import run_publisher
from stages.publish.registry import PUBLISH_DIR, Registry
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import delta_export, full_export, synthetic_meta

pytestmark = pytest.mark.integration
SPEC = ModelSpec("wide_deep", 4, (8,))
# AUC by trainer export: 1..5 each pass the gate, 6..12 are refused (production stays on v5)
AUC = {seq: (0.70 + 0.01 * (seq - 1) if seq <= 5 else 0.60) for seq in range(1, 13)}
# fulls at 1, 4, 7, 10 (full_every=3). The newest three (10, 11, 12) start at the full v10; the
# history 1..5 keeps its last two (production 5 and 4, one rollback step: chain 4, 5); 1..3 and
# 6..9 go.
KEPT = [4, 5, 10, 11, 12]


@pytest.fixture(params=["server", "local"])
def common(request: pytest.FixtureRequest, make_settings: Any, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> CommonSettings:
    """The MLflow server (`mlflow-artifacts:` artifacts, deleted through its HTTP API), or a
    local SQLite store whose artifacts are files in ./mlruns (deleted as files)."""
    if request.param == "server":
        settings: CommonSettings = make_settings("mlflow")
        return settings
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root: ./mlruns
    settings = make_settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return settings


def test_retention_keeps_exactly_what_is_needed(
    common: CommonSettings, new_trainer_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    rng = np.random.default_rng(3)
    run = new_trainer_run()
    settings = PublishSettings(full_every=3, gate_tolerance=0.01, keep_versions=3,
                               keep_trainer_exports=2)
    model: ModelExport = full_export(SPEC, rng, meta=synthetic_meta(1, AUC[1]))
    models = {1: model}
    run.log(model)
    deleted = run_publisher(common, settings, once=True).versions_deleted
    registry = Registry(common)
    sources = {1: registry.client.get_model_version(common.model_name, "1").source}
    for seq in range(2, 13):
        delta = delta_export(model, rng, change=0.1, evict=0.02, add=20,
                             meta=synthetic_meta(seq, AUC[seq]))
        model = apply_delta(model, delta)
        models[seq] = model
        run.log(delta)
        summary = run_publisher(common, settings, once=True)
        assert summary.versions == [seq]
        deleted += summary.versions_deleted
        sources[seq] = registry.client.get_model_version(common.model_name, str(seq)).source

    infos = sorted(registry.freshrec_versions(), key=lambda i: i.version)
    assert [i.version for i in infos] == KEPT
    assert deleted == 7
    assert [i.kind for i in infos] == ["full", "delta", "full", "delta", "delta"]
    assert registry.alias_version("production") == 5
    assert registry.production_history() == "4,5"

    # every kept version loads, with freshrec and with plain MLflow
    monkeypatch.setenv("MLFLOW_TRACKING_URI", common.mlflow_tracking_uri)
    (tmp_path / "work").mkdir()
    for version in KEPT:
        got = registry.materialize(version, tmp_path / "work")
        np.testing.assert_array_equal(got.ids, models[version].ids)
        np.testing.assert_array_equal(got.rows, models[version].rows)
        loaded = mlflow.pyfunc.load_model(f"models:/{common.model_name}/{version}")
        assert np.all(np.isfinite(loaded.predict(loaded.input_example)))

    # the deleted versions' artifact directories are gone; the kept ones are there
    # (each publisher run, one per run_publisher call here, holds the versions it created)
    for version, source in sources.items():
        run_id, _, rel = source.removeprefix("runs:/").partition("/")
        assert rel == f"{PUBLISH_DIR}/{version:08d}"
        listed = registry.client.list_artifacts(run_id, rel)
        assert bool(listed) == (version in KEPT), version
    if common.mlflow_tracking_uri.startswith("sqlite:"):
        on_disk = sorted(p.name for p in (tmp_path / "mlruns").rglob(f"{PUBLISH_DIR}/0*"))
        assert on_disk == [f"{v:08d}" for v in KEPT]
    # trainer exports: the newest two stay
    assert registry.trainer_export_seqs(run.run_id) == [11, 12]

    # rollback walks the trimmed history, all of it kept
    assert registry.rollback() == (5, 4)
    with pytest.raises(ContractError, match="no earlier production version"):
        registry.rollback()
    assert registry.version_info(4).kind == "full"

    # a restarted publisher continues the chain from v12 and keeps the policy
    model = apply_delta(model, delta := delta_export(model, rng, meta=synthetic_meta(13, 0.75)))
    run.log(delta)
    summary = run_publisher(common, settings, once=True)
    assert summary.versions == [13]
    kept = sorted(i.version for i in registry.freshrec_versions())
    # v13 passes the gate against v4 (history "4,13"); the newest three 11..13 need v10
    assert registry.alias_version("production") == 13
    assert kept == [4, 10, 11, 12, 13]
    tags = registry.version_tags(13)
    assert tags[plan.T_KIND] == "full" and tags[plan.T_CHAIN_POS] == "0"  # v12 was at pos 2
    got = registry.materialize(13, tmp_path / "work")
    np.testing.assert_array_equal(got.rows, model.rows)


def test_keep_zero_keeps_everything(common: CommonSettings, new_trainer_run: Any) -> None:
    rng = np.random.default_rng(4)
    run = new_trainer_run()
    settings = PublishSettings(full_every=2, keep_versions=0, keep_trainer_exports=0)
    model = full_export(SPEC, rng, n_rows=50, meta=synthetic_meta(1))
    run.log(model)
    run_publisher(common, settings, once=True)
    for seq in range(2, 6):
        delta = delta_export(model, rng, meta=synthetic_meta(seq))
        model = apply_delta(model, delta)
        run.log(delta)
        assert run_publisher(common, settings, once=True).versions_deleted == 0
    registry = Registry(common)
    assert sorted(i.version for i in registry.freshrec_versions()) == [1, 2, 3, 4, 5]
    assert registry.trainer_export_seqs(run.run_id) == [1, 2, 3, 4, 5]
