"""The publisher against a real MLflow server: a chain of full and delta versions, tags,
the quality gate, rollback, and a restart of the publisher and of the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.common.errors import ContractError
from stages.common.export_meta import ExportMeta, ProgressiveMetrics, StoreRange
from stages.common.model_export import ModelSpec, apply_delta
from stages.common.settings import CommonSettings
from stages.publish.core import plan
from stages.publish.publisher import run_publisher
from stages.publish.registry import Registry
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import delta_export, full_export

pytestmark = pytest.mark.integration
SPEC = ModelSpec("wide_deep", 4, (8,))


def _meta(seq: int, auc: float) -> dict[str, Any]:
    return ExportMeta(
        window_first=seq * 10, window_last=seq * 10 + 9, samples=seq * 1000,
        store=StoreRange(stream_id=f"{seq}-0", seq=seq * 5),
        metrics=ProgressiveMetrics(samples=500, positives=100, auc=auc, logloss=0.45),
        max_event_time_ms=1_700_000_000_000 + seq,
    ).to_dict()


def _publish(common: CommonSettings, **kw: Any) -> Any:
    return run_publisher(common, PublishSettings(full_every=3, gate_tolerance=0.01, **kw),
                         once=True)


def test_chain_of_full_and_delta_versions(common: CommonSettings, new_trainer_run: Any,
                                          tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    run = new_trainer_run()
    models = {}
    model = full_export(SPEC, rng, n_rows=400, meta=_meta(1, 0.70))
    run.log(model)
    assert _publish(common).versions == [1]
    for seq in range(2, 7):
        delta = delta_export(model, rng, change=0.1, evict=0.02, add=20, meta=_meta(seq, 0.71))
        model = apply_delta(model, delta)
        run.log(delta)
        models[seq] = model
        if seq == 3:
            continue  # exports 3 and 4 are folded into one version
        _publish(common)
    registry = Registry(common)
    infos = [registry.version_info(v) for v in range(1, 6)]
    assert [i.kind for i in infos] == ["full", "delta", "delta", "full", "delta"]
    assert [i.export_seq for i in infos] == [1, 2, 4, 5, 6]
    assert [i.base_version for i in infos] == [None, 1, 2, None, 4]
    mv = registry.client.get_model_version(common.model_name, "3")
    assert mv.tags[plan.T_EXPORT_SEQ_FIRST] == "3" and mv.tags[plan.T_WINDOW_FIRST] == "30"
    assert mv.tags[plan.T_WINDOW_LAST] == "49" and mv.tags[plan.T_SAMPLES] == "4000"
    assert mv.tags[plan.T_STORE_POSITION] == "4-0/20"
    assert registry.alias_version("latest") == 5
    for version, seq in ((2, 2), (3, 4), (5, 6)):
        got = registry.materialize(version, tmp_path)
        np.testing.assert_array_equal(got.ids, models[seq].ids)
        np.testing.assert_array_equal(got.rows, models[seq].rows)
    # the delta version is smaller than the full one
    sizes = {}
    for version in (4, 5):
        mv = registry.client.get_model_version(common.model_name, str(version))
        run_id, _, rel = mv.source.removeprefix("runs:/").partition("/")
        files = registry.client.list_artifacts(run_id, f"{rel}/export" if version == 5
                                               else f"{rel}/artifacts/export")
        sizes[version] = sum(f.file_size or 0 for f in files)
    assert sizes[5] < sizes[4]

    # a publisher restart resumes the chain; a trainer restart (new run, full export) forces
    # a full version
    delta = delta_export(model, rng, meta=_meta(7, 0.72))
    run.log(delta)
    assert _publish(common).versions == [6]
    assert registry.version_info(6).base_version == 5
    run2 = new_trainer_run()
    restarted = full_export(SPEC, rng, n_rows=100, meta=_meta(8, 0.72))
    run2.log(restarted)
    assert _publish(common).versions == [7]
    info = registry.version_info(7)
    assert info.kind == "full" and info.run_id == run2.run_id
    np.testing.assert_array_equal(registry.materialize(7, tmp_path).rows,
                                  restarted.rows[np.argsort(restarted.ids)])
    assert _publish(common).versions == []  # nothing new


def test_quality_gate_and_rollback(common: CommonSettings, new_trainer_run: Any) -> None:
    rng = np.random.default_rng(1)
    run = new_trainer_run()
    model = full_export(SPEC, rng, n_rows=50, meta=_meta(1, 0.75))
    run.log(model)
    registry = Registry(common)
    summary = _publish(common)
    assert summary.promoted == [1] and registry.alias_version("production") == 1
    for seq, auc in ((2, 0.76), (3, 0.70), (4, 0.755)):
        delta = delta_export(model, rng, meta=_meta(seq, auc))
        model = apply_delta(model, delta)
        run.log(delta)
        _publish(common)
    assert registry.alias_version("latest") == 4
    assert registry.alias_version("production") == 4
    gate = registry.client.get_model_version(common.model_name, "3").tags[plan.T_GATE]
    assert gate.startswith("refused: AUC 0.70000 < 0.75000")
    assert registry.rollback() == (4, 2)
    assert registry.alias_version("production") == 2
    assert registry.rollback() == (2, 1)
    with pytest.raises(ContractError, match="no earlier production version"):
        registry.rollback()
    assert registry.alias_version("production") == 1


def test_watch_alias_measures_freshness(common: CommonSettings, new_trainer_run: Any) -> None:
    import threading
    import time

    from stages.publish.core.freshness import freshness
    from stages.publish.watch import watch_alias

    ingest_ms = int(time.time() * 1000)
    run = new_trainer_run()
    meta = ExportMeta.parse(_meta(1, 0.7)).model_copy(update={"max_event_time_ms": ingest_ms})
    run.log(full_export(SPEC, np.random.default_rng(2), n_rows=20, meta=meta.to_dict()))
    _publish(common)
    stop = threading.Event()
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    sightings = watch_alias(common, "production", stop, poll_s=0.2)
    assert [s.version for s in sightings] == [1]
    report = freshness(np.array([ingest_ms - 5]), np.array([ingest_ms]), sightings)
    assert report.uncovered == 0 and report.p50_s is not None and 0 < report.p50_s < 300
