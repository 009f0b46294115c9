"""Serving's conventions against a real registry version from the real publisher, over real
HTTP (uvicorn): MLflow's scoring protocol on /invocations answers what /predict answers in
every input form, /ping, /openapi.json, and /metrics read by Prometheus' own parser."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.services.ports import free_port
from stages.common.schema import load_schema
from stages.common.model_export import ModelSpec
from stages.common.settings import CommonSettings
from stages.publish.publisher import run_publisher
from stages.publish.registry import Registry
from stages.publish.serving import ModelFollower, create_app
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import criteo_rows, full_export, synthetic_meta

pytestmark = pytest.mark.integration
SETTINGS = PublishSettings(full_every=4, serve_poll_s=0.2)
CRITEO = load_schema("criteo")
DENSE_NAMES = tuple(f.name for f in CRITEO.dense)
CAT_NAMES = tuple(f.name for f in CRITEO.categorical)


# the same forms as tests/unit/publish/test_serving_app.py (tests are not a package)
def _protocol_bodies(rows: list[str]) -> dict[str, tuple[str, Any]]:
    """The same rows in every form /invocations accepts: name -> (content type, body)."""
    names = [*DENSE_NAMES, *CAT_NAMES]
    cells = [[v or None for v in r.split("\t")[1:]] for r in rows]
    typed = [[None if v is None else (float(v) if n.startswith("I") else v)
              for n, v in zip(names, row)] for row in cells]  # what pandas sends: I as double
    records = [{n: v for n, v in zip(names, row) if v is not None} for row in typed]
    columns = {n: [row[j] for row in typed] for j, n in enumerate(names)}
    csv_lines = [",".join(names)] + [",".join("" if v is None else v for v in row)
                                     for row in cells]
    unlabelled = [r.split("\t", 1)[1] for r in rows]
    return {
        "dataframe_split": ("application/json", {"dataframe_split": {
            "columns": names, "data": typed, "index": list(range(len(rows)))}}),
        "dataframe_split, some columns": ("application/json", {"dataframe_split": {
            "columns": names[::-1], "data": [row[::-1] for row in typed]}}),
        "dataframe_split, row column": ("application/json", {"dataframe_split": {
            "columns": ["row"], "data": [[r] for r in rows]}}),
        "dataframe_records": ("application/json", {"dataframe_records": records}),
        "instances": ("application/json", {"instances": records}),
        "inputs, columns": ("application/json", {"inputs": columns}),
        "inputs, raw rows": ("application/json", {"inputs": unlabelled}),
        "csv": ("text/csv", "\n".join(csv_lines) + "\n"),
        "csv, raw rows": ("text/csv", "\n".join(rows)),
        "text": ("text/plain", "\n".join(unlabelled)),
    }


def test_invocations_ping_and_metrics_on_a_published_version(
    common: CommonSettings, new_trainer_run: Any, tmp_path: Path
) -> None:
    import uvicorn

    run = new_trainer_run()
    run.log(full_export(ModelSpec("wide_deep", 4, (16, 8), 0), np.random.default_rng(21),
                        meta=synthetic_meta(1, 0.7)))
    version = run_publisher(common, SETTINGS, once=True).last_version
    assert version is not None
    follower = ModelFollower(Registry(common), "production", tmp_path, 0.2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(follower, SETTINGS), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    rows = criteo_rows(50, np.random.default_rng(22))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/ping").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serving did not load the model in 60 s"
            time.sleep(0.2)
        predict = httpx.post(f"{base}/predict", content="\n".join(rows))
        assert predict.json()["version"] == str(version)
        want = predict.json()["predictions"]
        bodies = _protocol_bodies(rows)
        for name, (ctype, body) in bodies.items():
            kwargs: dict[str, Any] = ({"json": body} if ctype == "application/json" else
                                      {"content": body, "headers": {"content-type": ctype}})
            reply = httpx.post(f"{base}/invocations", **kwargs)
            assert reply.status_code == 200, (name, reply.text)
            np.testing.assert_allclose(reply.json()["predictions"], want, atol=1e-5,
                                       err_msg=name)
        schema = httpx.get(f"{base}/openapi.json").json()
        assert {"/invocations", "/ping", "/metrics"} <= set(schema["paths"])
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(metrics.text)
                   for s in family.samples}
        count = "freshrec_serve_requests_total"
        assert samples[(count, (("endpoint", "/invocations"), ("status", "200")))] \
            == len(bodies)
        assert samples[(count, (("endpoint", "/predict"), ("status", "200")))] == 1
        assert samples[("freshrec_serve_rows_total", (("endpoint", "/invocations"),))] \
            == len(bodies) * len(rows)
        model = (("alias", "production"), ("model", common.model_name))
        assert samples[("freshrec_serve_model_version", model)] == version
        assert 0 <= samples[("freshrec_serve_model_staleness_seconds", model)] < 300
        assert samples[("freshrec_serve_model_swaps_total", ())] == 1
    finally:
        server.should_exit = True
        thread.join(timeout=30)
