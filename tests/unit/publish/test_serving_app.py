"""The serving app's HTTP behaviour with a model set in memory (no registry involved)."""

from __future__ import annotations

import asyncio
import threading
import types
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from stages.common.model_export import ModelSpec
from stages.common.reference_model import predict
from stages.publish.core.requests import text_to_inputs
from stages.publish.loaded import LoadedModel
from stages.publish.serving import ModelFollower, create_app
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import criteo_rows, full_export

ROWS = criteo_rows(4, np.random.default_rng(5))


def _client(
    loaded: bool = True, **limits: int
) -> tuple[httpx.AsyncClient, LoadedModel, ModelFollower]:
    model = LoadedModel(full_export(ModelSpec("dcn", 3, (6,), 1), np.random.default_rng(1)),
                        "7", "full", 0)
    registry = types.SimpleNamespace(name="m")  # never called: follow=False, current preset
    follower = ModelFollower(registry, "production", Path("."), 1.0)  # type: ignore[arg-type]
    follower.current = model if loaded else None
    app = create_app(follower, PublishSettings(**limits), follow=False)  # type: ignore[arg-type]
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return client, model, follower


@pytest.mark.anyio
async def test_predict_text_and_json() -> None:
    client, model, holder = _client()
    async with client:
        text = await client.post("/predict", content="\n".join(ROWS),
                                 headers={"content-type": "text/plain"})
        js = await client.post("/predict", json={"rows": ROWS})
        version = await client.get("/version")
        health = await client.get("/health")
    inputs = text_to_inputs("\n".join(ROWS).encode(), 10)
    want = predict(model.export, inputs.dense, inputs.ids)
    for resp in (text, js):
        assert resp.status_code == 200, resp.text
        assert resp.json()["version"] == "7"
        np.testing.assert_allclose(resp.json()["predictions"], want, atol=1e-12)
    assert version.json()["version"] == "7" and health.status_code == 200


@pytest.mark.anyio
async def test_bad_requests_get_a_4xx_with_a_reason() -> None:
    client, _, _ = _client(serve_max_body_bytes=2048, serve_max_rows=3)
    async with client:
        too_big = await client.post("/predict", content=b"0" * 4096)
        too_many = await client.post("/predict", json={"rows": ROWS})
        bad_json = await client.post("/predict", content=b"{", headers={"content-type":
                                                                        "application/json"})
        bad_row = await client.post("/predict", content=b"1\t2")
        wrong_type = await client.post("/predict", content=b"x",
                                       headers={"content-type": "image/png"})
        missing = await client.get("/nope")
        wrong_method = await client.get("/predict")
    assert too_big.status_code == 413 and "at most 2048" in too_big.json()["error"]
    assert too_many.status_code == 413 and "too many rows: 4" in too_many.json()["error"]
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]
    assert bad_row.status_code == 422 and bad_row.json()["error"].startswith("row 1: expected")
    assert wrong_type.status_code == 415
    assert missing.status_code == 404 and "error" in missing.json()
    assert wrong_method.status_code == 405


@pytest.mark.anyio
async def test_no_model_yet_is_503() -> None:
    client, _, _ = _client(loaded=False)
    async with client:
        resp = await client.post("/predict", content="\n".join(ROWS))
        health = await client.get("/health")
    assert resp.status_code == 503 and health.status_code == 503


class _Blocking(LoadedModel):
    """Predicts only once `release` is set, and says when it started."""

    started = threading.Event()
    release = threading.Event()

    def predict(self, inputs: Any) -> Any:
        self.started.set()
        assert self.release.wait(10)
        return super().predict(inputs)


@pytest.mark.anyio
async def test_a_request_in_flight_keeps_its_model_across_a_swap() -> None:
    client, model, holder = _client()
    old = _Blocking(model.export, "7", "full", 0)
    new = LoadedModel(model.export, "8", "full", 0)
    holder.current = old
    async with client:
        task = asyncio.create_task(client.post("/predict", content="\n".join(ROWS)))
        while not old.started.is_set():
            await asyncio.sleep(0.01)
        holder.current = new  # the swap the follower does
        old.release.set()
        reply = await task
        after = await client.post("/predict", content="\n".join(ROWS))
    assert reply.json()["version"] == "7" and after.json()["version"] == "8"
