"""The publisher's lineage in MLflow and its Prometheus metrics, with the real publisher over
synthetic trainer exports on the MLflow server: descriptions of the registered model and of each
version (with its gate decision), read back through MlflowClient; one publisher run per
registered model that restarted publishers continue; the metrics endpoint scraped while the
publisher loops, its counters equal to the publisher's summary."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

from stages.common.model_export import TAG_ROLE, ModelSpec
from stages.common.settings import CommonSettings
from stages.publish.core import plan
from stages.publish.publisher import PublishSummary, run_publisher
from stages.publish.registry import TAG_MODEL
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import delta_export, full_export, synthetic_meta

pytestmark = pytest.mark.integration
SPEC = ModelSpec("wide_deep", 4, (8,))


def _client(common: CommonSettings) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=common.mlflow_tracking_uri,
                        registry_uri=common.mlflow_tracking_uri)


def test_descriptions_and_one_publisher_run(common: CommonSettings,
                                            new_trainer_run: Any) -> None:
    rng = np.random.default_rng(5)
    run = new_trainer_run()
    settings = PublishSettings(full_every=3, gate_tolerance=0.01)
    model = full_export(SPEC, rng, n_rows=100, meta=synthetic_meta(1, 0.70))
    run.log(model)
    # two publisher processes: each run_publisher call has its own Registry (and run lookup)
    assert run_publisher(common, settings, once=True).versions == [1]
    run.log(delta_export(model, rng, meta=synthetic_meta(2, 0.60)))  # refused by the gate
    second = run_publisher(common, settings, once=True)
    assert second.versions == [2] and second.gate_refusals == 1
    assert run_publisher(common, settings, once=True).versions == []  # a third, idle one

    client = _client(common)
    name = common.model_name
    described = client.get_registered_model(name).description
    assert described == plan.model_description(name, "wide_deep", 3,
                                                common.schema().field_names())
    assert "the columns I1, I2," in described  # the Criteo preset's input fields
    assert "`wide_deep`" in described and "CTR" in described
    assert f'mlflow.pyfunc.load_model("models:/{name}@production")' in described

    v1, v2 = (client.get_model_version(name, str(v)) for v in (1, 2))
    for mv in (v1, v2):  # the description is the one the tags and the gate decision give
        assert mv.description == plan.version_description(
            dict(mv.tags), plan.parse_gate(mv.tags[plan.T_GATE]))
    assert "Kind: full snapshot" in v1.description
    assert "Quality gate: passed (production moved here): no production version yet" \
        in v1.description
    assert "delta against version 1" in v2.description
    assert "Windows 20..29" in v2.description and "2000 samples" in v2.description
    assert "AUC 0.60000" in v2.description and "2-0/10" in v2.description
    assert "Quality gate: refused (production stays): AUC 0.60000 < 0.69000 (production v1)" \
        in v2.description

    exp = client.get_experiment_by_name(common.mlflow_experiment).experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.`{TAG_ROLE}` = 'publisher'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    publisher_run = runs[0]
    assert publisher_run.data.tags[TAG_MODEL] == name
    assert publisher_run.info.status == "FINISHED"
    assert v1.run_id == v2.run_id == publisher_run.info.run_id
    listed = {f.path for f in client.list_artifacts(publisher_run.info.run_id, "publish")}
    assert listed == {"publish/00000001", "publish/00000002"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    """`name{label=value}` -> value of every freshrec_publish_ sample."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("freshrec_publish_"):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def _wait_for(port: int, key: str, value: float, timeout_s: float = 90) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    got: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            got = _scrape(port)
        except (urllib.error.URLError, ConnectionError):
            got = {}
        if got.get(key) == value:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{key} never became {value}: {got}")


def test_metrics_endpoint_counts_what_the_summary_says(common: CommonSettings,
                                                       new_trainer_run: Any) -> None:
    rng = np.random.default_rng(6)
    run = new_trainer_run()
    model = full_export(SPEC, rng, n_rows=100, meta=synthetic_meta(1, 0.70))
    run.log(model)
    port = _free_port()
    settings = PublishSettings(full_every=3, gate_tolerance=0.01, metrics_port=port)
    stop = threading.Event()
    result: list[PublishSummary] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_publisher(common, settings, once=False, interval_s=0.5, stop=stop)),
        daemon=True,
    )
    thread.start()
    try:
        first = _wait_for(port, "freshrec_publish_versions_total{kind=full}", 1)
        assert first["freshrec_publish_promotions_total"] == 1
        assert first["freshrec_publish_last_version"] == 1
        assert first["freshrec_publish_production_version"] == 1
        run.log(delta_export(model, rng, meta=synthetic_meta(2, 0.60)))  # refused by the gate
        got = _wait_for(port, "freshrec_publish_gate_refusals_total", 1)
        time.sleep(1.5)  # a few idle cycles more
        got = _scrape(port)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive() and len(result) == 1
    summary = result[0]
    assert summary.versions == [1, 2] and summary.version_kinds == ["full", "delta"]
    assert got["freshrec_publish_versions_total{kind=full}"] == summary.version_kinds.count("full")
    assert got["freshrec_publish_versions_total{kind=delta}"] == \
        summary.version_kinds.count("delta")
    assert got["freshrec_publish_promotions_total"] == len(summary.promoted) == 1
    assert got["freshrec_publish_gate_refusals_total"] == summary.gate_refusals == 1
    assert got["freshrec_publish_exports_folded_total"] == summary.exports_folded == 2
    assert got["freshrec_publish_exports_refused_total"] == summary.refused_exports == 0
    assert got["freshrec_publish_failed_cycles_total"] == summary.failed_cycles
    assert got["freshrec_publish_last_version"] == summary.last_version
    assert got["freshrec_publish_production_version"] == 1
    assert 0 <= got["freshrec_publish_seconds_since_last_publish"] < 60
    # the server is shut down with the publisher
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _scrape(port)
