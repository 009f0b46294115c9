"""Every registry version, delta ones included, is a plain MLflow pyfunc model.

The real trainer (TFEngine, `run_trainer` over real Criteo rows) uploads its exports into the
test MLflow server; the real publisher registers them, polling after the trainer's first,
second and fourth upload: v1 full, v2 delta (chain position 1), v3 delta (position 2, exports
3 and 4 folded), `production` on v3. Then `mlflow.pyfunc.load_model` and `mlflow models
serve` load the versions by registry URI and predict what freshrec's own serving predicts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from infra.services.ports import free_port
from stages.common.model_export import TAG_EXPORT_SEQ
from stages.common.schema import load_schema
from stages.common.settings import CommonSettings, load_settings
from stages.publish.core.requests import text_to_inputs
from stages.publish.loaded import LoadedModel
from stages.publish.publisher import run_publisher
from stages.publish.registry import Registry
from stages.publish.serving import ModelFollower, create_app
from stages.publish.settings import PublishSettings

pytestmark = pytest.mark.integration
N_ROWS = 40
CRITEO = load_schema("criteo")
DENSE_NAMES = [f.name for f in CRITEO.dense]
CAT_NAMES = [f.name for f in CRITEO.categorical]


@dataclass(frozen=True)
class Published:
    common: CommonSettings
    kinds: dict[int, str]
    rows: list[str]  # labelled raw rows (40 fields), not seen by the trainer
    work: Path

    def expected(self, version: int) -> np.ndarray:
        """What the registry-materialized model of `version` predicts for `rows`."""
        model = LoadedModel(Registry(self.common).materialize(version, self.work),
                            str(version), "full", 0)
        inputs = text_to_inputs("\n".join(self.rows).encode(), 1000, model.requests)
        return model.predict(inputs)


def _columns(rows: list[str]) -> pd.DataFrame:
    """The column form of labelled raw rows: float64 I1..I13 and str C1..C26, NaN/None when
    missing (what MLflow's `double` / `string` columns take)."""
    cells = [[v or None for v in r.split("\t")[1:]] for r in rows]
    frame = pd.DataFrame(cells, columns=[*DENSE_NAMES, *CAT_NAMES])
    for name in DENSE_NAMES:
        frame[name] = pd.to_numeric(frame[name]).astype("float64")
    return frame


@pytest.fixture(scope="module")
def published(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory,
              criteo_tiny: Path) -> Published:
    from mlflow import MlflowClient

    from stages.train.loop import run_trainer
    from stages.train.settings import TrainSettings

    tmp = tmp_path_factory.mktemp("plain-mlflow")
    tag = f"plain-{uuid.uuid4().hex[:10]}"
    common = load_settings(CommonSettings, mlflow_tracking_uri=mlflow_server,
                           mlflow_experiment=tag, model_name=f"{tag}-ctr",
                           state_dir=tmp / "state", checkpoint_dir=tmp / "checkpoints")
    lines = criteo_tiny.read_text().splitlines()
    (tmp / "train.tsv").write_text("\n".join(lines[:800]) + "\n")
    train = TrainSettings(model_type="wide_deep", embedding_dim=4, hidden_units=(8,),
                          batch_size=64, window_samples=200, export_every=1,
                          full_export_every=100, checkpoint_every=100, admit_after=1)
    summary = run_trainer(common, train, replay=tmp / "train.tsv", out=lambda _: None)
    assert summary.export_seq == 4 and summary.run_id is not None
    client = MlflowClient(mlflow_server)
    settings = PublishSettings(full_every=10)
    for head in (1, 2, 4):  # the publisher polls after the trainer's 1st, 2nd, 4th upload
        client.set_tag(summary.run_id, TAG_EXPORT_SEQ, str(head))
        run_publisher(common, settings, once=True)
    registry = Registry(common)
    kinds = {v: registry.version_info(v).kind for v in (1, 2, 3)}
    assert kinds == {1: "full", 2: "delta", 3: "delta"}
    assert registry.alias_version("production") == 3
    assert registry.version_info(3).chain_pos == 2
    (tmp / "work").mkdir()
    return Published(common, kinds, lines[800 : 800 + N_ROWS], tmp / "work")


def test_load_model_by_alias_and_version(published: Published,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.models
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", published.common.mlflow_tracking_uri)
    name = published.common.model_name
    columns = _columns(published.rows)
    assert columns.isna().any().any()  # the rows do miss values
    for uri, version in ((f"models:/{name}@production", 3), (f"models:/{name}/3", 3),
                         (f"models:/{name}/2", 2), (f"models:/{name}/1", 1)):
        info = mlflow.models.get_model_info(uri)
        assert info.signature is not None and info.saved_input_example_info is not None
        assert info.signature.inputs.input_names() == [*DENSE_NAMES, *CAT_NAMES, "row"]
        model = mlflow.pyfunc.load_model(uri)
        expected = published.expected(version)
        np.testing.assert_allclose(model.predict(columns), expected, atol=1e-5, err_msg=uri)
        raw = model.predict(pd.DataFrame({"row": published.rows}))
        np.testing.assert_allclose(raw, expected, atol=1e-5, err_msg=uri)
        # the saved input example goes through the model as MLflow hands it over
        assert np.all(np.isfinite(model.predict(model.input_example)))


def test_load_without_tracking_uri_uses_the_recorded_registry(
    published: Published, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A delta version downloaded to a directory loads with no MLFLOW_TRACKING_URI set: its
    chain file names the registry the versions it needs are in."""
    import mlflow.artifacts
    import mlflow.pyfunc

    registry = Registry(published.common)
    source = registry.client.get_model_version(registry.name, "3").source
    local = mlflow.artifacts.download_artifacts(
        source, dst_path=str(tmp_path), tracking_uri=published.common.mlflow_tracking_uri
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model = mlflow.pyfunc.load_model(local)
    np.testing.assert_allclose(model.predict(_columns(published.rows)), published.expected(3),
                               atol=1e-5)


async def _freshrec_serving(published: Published, work: Path) -> list[float]:
    follower = ModelFollower(Registry(published.common), "production", work, 0.2)
    assert follower.poll_once() and follower.current is not None
    assert follower.current.version == "3"
    app = create_app(follower, PublishSettings(), follow=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        reply = await client.post("/predict", content="\n".join(published.rows))
    assert reply.status_code == 200, reply.text
    return [float(p) for p in reply.json()["predictions"]]


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


@pytest.mark.slow
@pytest.mark.anyio
async def test_mlflow_models_serve_a_delta_version(published: Published, tmp_path: Path) -> None:
    serving = await _freshrec_serving(published, tmp_path)
    port = free_port()
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(bin_dir / "mlflow"), "models", "serve", "-m",
         f"models:/{published.common.model_name}/3", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        # MLflow execs `uvicorn` by name: the virtualenv's bin must be on PATH (activated)
        env={**os.environ, "MLFLOW_TRACKING_URI": published.common.mlflow_tracking_uri,
             "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ping(proc, base, 120)
        frame = _columns(published.rows)
        split: dict[str, Any] = {"columns": list(frame.columns), "data": [
            [None if pd.isna(v) else (int(v) if isinstance(v, float) else v) for v in row]
            for row in frame.itertuples(index=False)
        ]}
        assert any(v is None for row in split["data"] for v in row)
        records = [{k: v for k, v in zip(split["columns"], row) if v is not None}
                   for row in split["data"]]
        bodies: dict[str, Any] = {
            "dataframe_split (nulls)": {"dataframe_split": split},
            "dataframe_records": {"dataframe_records": records},
            "raw rows, dataframe_split": {"dataframe_split": {
                "columns": ["row"], "data": [[r] for r in published.rows]}},
            "raw rows, inputs": {"inputs": {"row": published.rows}},
        }
        for what, body in bodies.items():
            reply = httpx.post(f"{base}/invocations", json=body, timeout=60)
            assert reply.status_code == 200, f"{what}: {reply.text[:2000]}"
            np.testing.assert_allclose(reply.json()["predictions"], serving, atol=1e-5,
                                       err_msg=what)
        refused = httpx.post(f"{base}/invocations", json={"dataframe_split": {
            "columns": ["I1", "row"], "data": [[1, published.rows[0]]]}}, timeout=60)
        assert refused.status_code >= 400 and "not both" in refused.text
        registry = Registry(published.common)
        assert registry.version_tags(3)["freshrec.schema"] == CRITEO.schema_id
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
