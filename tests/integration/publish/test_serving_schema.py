"""A model of the ecommerce schema end to end through the publish stage: the publisher
registers its export (the version carries the schema: artifact and tag `freshrec.schema`),
`freshrec serve` loads it with no FRESHREC_SCHEMA and answers JSON records keyed by the
schema's fields with what reference_model computes, a serve told another schema refuses the
version, and `mlflow models serve` of the same version answers the same."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from infra.services.ports import free_port
from stages.common.layout import Transform, compile_layout
from stages.common.reference_model import predict
from stages.common.schema import load_schema
from stages.common.settings import CommonSettings, load_settings
from stages.publish.publisher import run_publisher
from stages.publish.registry import TAG_SCHEMA, Registry
from stages.publish.serving import ModelFollower, create_app
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import schema_export, schema_rows, synthetic_records

pytestmark = pytest.mark.integration
SHOP = load_schema("ecommerce")


def _serve_settings(common: CommonSettings, **schema: str) -> CommonSettings:
    """The publisher's settings as a serve would have them: FRESHREC_SCHEMA unset (or given)."""
    return load_settings(CommonSettings, mlflow_tracking_uri=common.mlflow_tracking_uri,
                         mlflow_experiment=common.mlflow_experiment,
                         model_name=common.model_name, state_dir=common.state_dir, **schema)


@pytest.mark.slow
@pytest.mark.anyio
async def test_an_ecommerce_version_served_by_freshrec_and_by_mlflow(
    common: CommonSettings, new_trainer_run: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stages.common.rows import RowParser

    monkeypatch.delenv("FRESHREC_SCHEMA", raising=False)
    common = common.model_copy(update={"feature_schema": "ecommerce"})  # the publisher's
    export = schema_export(SHOP, np.random.default_rng(31), model_type="dcn",
                           hidden_units=(16, 8))
    new_trainer_run().log(export)
    version = run_publisher(common, PublishSettings(), once=True).last_version
    assert version is not None
    registry = Registry(_serve_settings(common))
    assert registry.version_tags(version)[TAG_SCHEMA] == SHOP.schema_id

    records = synthetic_records(SHOP, 30, np.random.default_rng(32))
    rows = schema_rows(SHOP, records, [i % 2 for i in range(30)])
    parsed = RowParser.for_schema(SHOP).parse([r.encode() for r in rows])
    assert not parsed.bad
    transform = Transform(SHOP, compile_layout(SHOP, export.spec.embedding_dim))
    want = predict(export, transform.dense(parsed.raw), transform.ids(parsed.raw))

    follower = ModelFollower(registry, "production", tmp_path, 0.2)
    assert follower.poll_once() and follower.current is not None
    assert follower.current.schema == SHOP
    app = create_app(follower, PublishSettings(), follow=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        by_records = await client.post("/predict", json={"instances": records})
        by_rows = await client.post("/predict", json={"rows": rows})
        openapi = (await client.get("/openapi.json")).json()
    for reply in (by_records, by_rows):
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(reply.json()["predictions"], want, atol=1e-5)
    record = openapi["paths"]["/predict"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["instances"]["items"]
    assert "recent_items" in record["properties"]

    told_criteo = ModelFollower(Registry(_serve_settings(common, feature_schema="criteo")),
                                "production", tmp_path, 0.2)
    assert not told_criteo.poll_once() and told_criteo.current is None
    assert f"made with feature schema {SHOP.schema_id}, but FRESHREC_SCHEMA names criteo@" \
        in str(told_criteo.last_error)

    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "FRESHREC_SCHEMA"}
    proc = subprocess.Popen(
        [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{common.model_name}/"
         f"{version}", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env={**env, "MLFLOW_TRACKING_URI": common.mlflow_tracking_uri,
             "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ping(proc, base, 120)
        names = list(SHOP.field_names())
        bodies: dict[str, Any] = {
            "dataframe_records": {"dataframe_records": records},
            "dataframe_split": {"dataframe_split": {
                "columns": names, "data": [[r[n] for n in names] for r in records]}},
            "raw rows": {"dataframe_split": {"columns": ["row"], "data": [[r] for r in rows]}},
        }
        for what, body in bodies.items():
            reply = httpx.post(f"{base}/invocations", json=body, timeout=60)
            assert reply.status_code == 200, f"{what}: {reply.text[:2000]}"
            np.testing.assert_allclose(reply.json()["predictions"], want, atol=1e-5,
                                       err_msg=what)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


# as in test_plain_mlflow.py (tests are not a package)
def _wait_for_ping(proc: subprocess.Popen[bytes], base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"mlflow models serve exited: {out[-3000:]}")
        try:
            if httpx.get(f"{base}/ping").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"mlflow models serve did not start in {timeout_s} s"
        time.sleep(0.5)
