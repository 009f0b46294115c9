"""Serving against a real MLflow server: it follows the alias, applies deltas, answers with
predictions equal to the reference forward pass on the trainer's model, refuses a corrupt
delta and keeps its version; once in-process (httpx ASGI transport) and once under uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stages.common.model_export import ModelExport, ModelSpec, apply_delta
from stages.common.reference_model import predict
from stages.common.settings import CommonSettings
from stages.common.schema import load_schema
from stages.publish.core.requests import RequestParser, text_to_inputs
from stages.publish.publisher import run_publisher
from stages.publish.registry import PUBLISH_DIR, Registry
from stages.publish.serving import ModelFollower, create_app
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import criteo_rows, delta_export, full_export, synthetic_meta

pytestmark = pytest.mark.integration
SPEC = ModelSpec("dcn", 4, (16, 8), 2)
ROWS = criteo_rows(64, np.random.default_rng(11))
SETTINGS = PublishSettings(full_every=4, serve_poll_s=0.2)


def _expected(model: ModelExport) -> np.ndarray:
    inputs = text_to_inputs("\n".join(ROWS).encode(), 1000, RequestParser(load_schema("criteo")))
    order = np.argsort(model.ids)
    full = ModelExport(model.spec, "full", model.export_seq, None, model.dense,
                       model.ids[order], model.rows[order])
    return predict(full, inputs.dense, inputs.ids)


def _step(common: CommonSettings, run: Any, export: ModelExport) -> int:
    run.log(export)
    summary = run_publisher(common, SETTINGS, once=True)
    assert summary.last_version is not None
    return summary.last_version


def _flip_bytes(registry: Registry, version: int, tmp: Path) -> None:
    """Overwrite one array of a logged version with a corrupted copy, through the server."""
    mv = registry.client.get_model_version(registry.name, str(version))
    run_id, _, rel = mv.source.removeprefix("runs:/").partition("/")
    assert rel.startswith(PUBLISH_DIR)
    local = Path(registry.client.download_artifacts(run_id, f"{rel}/export/embedding_rows.npy",
                                                    str(tmp)))
    data = bytearray(local.read_bytes())
    data[-5:] = bytes(b ^ 0xFF for b in data[-5:])
    local.write_bytes(bytes(data))
    registry.client.log_artifact(run_id, str(local), f"{rel}/export")


@pytest.mark.anyio
async def test_serving_follows_the_alias_and_refuses_a_corrupt_delta(
    common: CommonSettings, new_trainer_run: Any, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    run = new_trainer_run()
    model = full_export(SPEC, rng, meta=synthetic_meta(1, 0.7))
    registry = Registry(common)
    follower = ModelFollower(registry, "production", tmp_path / "serve", 0.2)
    (tmp_path / "serve").mkdir()
    app = create_app(follower, SETTINGS, follow=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/health")).status_code == 503
        for step in range(3):
            if step:
                delta = delta_export(model, rng, change=0.3, evict=0.05, add=5,
                                     meta=synthetic_meta(1, 0.7))
                model = apply_delta(model, delta)
                version = _step(common, run, delta)
            else:
                version = _step(common, run, model)
            assert follower.poll_once()
            reply = await c.post("/predict", content="\n".join(ROWS))
            assert reply.status_code == 200, reply.text
            assert reply.json()["version"] == str(version)
            np.testing.assert_allclose(reply.json()["predictions"], _expected(model), atol=1e-5)
        served = model

        bad = delta_export(model, rng, meta=synthetic_meta(1, 0.7))
        bad_version = _step(common, run, bad)
        _flip_bytes(registry, bad_version, tmp_path / "corrupt")
        assert not follower.poll_once()
        status = (await c.get("/version")).json()
        assert status["version"] == str(bad_version - 1)
        assert f"version {bad_version} refused" in status["last_error"]
        assert "sha256" in status["last_error"]
        reply = await c.post("/predict", json={"rows": ROWS})
        np.testing.assert_allclose(reply.json()["predictions"], _expected(served), atol=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serving_under_uvicorn(common: CommonSettings, new_trainer_run: Any,
                               tmp_path: Path) -> None:
    import uvicorn

    rng = np.random.default_rng(4)
    run = new_trainer_run()
    model = full_export(SPEC, rng)
    _step(common, run, model)
    follower = ModelFollower(Registry(common), "production", tmp_path, 0.2)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(follower, SETTINGS), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serving did not load the model in 60 s"
            time.sleep(0.2)
        reply = httpx.post(f"{base}/predict", content="\n".join(ROWS),
                           headers={"content-type": "text/plain"})
        np.testing.assert_allclose(reply.json()["predictions"], _expected(model), atol=1e-5)
        delta = delta_export(model, rng, change=0.5)
        model = apply_delta(model, delta)
        version = _step(common, run, delta)
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/version").json()["version"] != str(version):
            assert time.monotonic() < deadline, "serving did not follow the alias in 60 s"
            time.sleep(0.2)
        reply = httpx.post(f"{base}/predict", json={"rows": ROWS})
        np.testing.assert_allclose(reply.json()["predictions"], _expected(model), atol=1e-5)
        bad = httpx.post(f"{base}/predict", content=b"1\t2\t3")
        assert bad.status_code == 422 and "Traceback" not in bad.text
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_serve_workers_each_follow_the_alias(common: CommonSettings, new_trainer_run: Any,
                                             tmp_path: Path) -> None:
    """`freshrec serve --workers 2`: two processes behind one port, each swapping the new
    version in; every answer is the served version's, /metrics counts both workers'."""
    import os
    import signal
    import subprocess
    import sys

    rng = np.random.default_rng(6)
    run = new_trainer_run()
    model = full_export(SPEC, rng)
    _step(common, run, model)
    port = _free_port()
    env = {**os.environ, "FRESHREC_MLFLOW_TRACKING_URI": common.mlflow_tracking_uri,
           "FRESHREC_MODEL_NAME": common.model_name, "FRESHREC_STATE_DIR": str(tmp_path),
           "FRESHREC_PUBLISH_NOTIFY": "false", "FRESHREC_PUBLISH_SERVE_POLL_S": "0.2"}
    freshrec = str(Path(sys.executable).with_name("freshrec"))
    proc = subprocess.Popen([freshrec, "serve", "--port", str(port), "--workers", "2"],
                            env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def versions(n: int) -> set[str]:  # a new connection each: both workers get asked
        return {httpx.get(f"{base}/version").json()["version"] for _ in range(n)}

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if versions(8) == {"1"}:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.3)
        for _ in range(4):
            reply = httpx.post(f"{base}/predict", content="\n".join(ROWS))
            np.testing.assert_allclose(reply.json()["predictions"], _expected(model),
                                       atol=1e-5)
        delta = delta_export(model, rng, change=0.5)
        model = apply_delta(model, delta)
        version = str(_step(common, run, delta))
        deadline = time.monotonic() + 60
        while versions(8) != {version}:
            assert time.monotonic() < deadline, "the workers did not follow the alias in 60 s"
            time.sleep(0.2)
        for _ in range(4):
            reply = httpx.post(f"{base}/predict", content="\n".join(ROWS))
            assert reply.json()["version"] == version
            np.testing.assert_allclose(reply.json()["predictions"], _expected(model),
                                       atol=1e-5)
        for _ in range(6):  # whichever worker answers, the requests of both are counted
            metrics = httpx.get(f"{base}/metrics")
            predicted = sum(
                sample.value for family in text_string_to_metric_families(metrics.text)
                for sample in family.samples if sample.name == "freshrec_serve_requests_total"
                and sample.labels["endpoint"] == "/predict")
            assert predicted == 8, metrics.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0
