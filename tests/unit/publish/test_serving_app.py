"""The serving app's HTTP behaviour with a model set in memory (no registry involved)."""

from __future__ import annotations

import asyncio
import threading
import time
import types
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from stages.common.errors import ServiceUnavailable
from stages.common.model_export import ModelSpec
from stages.common.reference_model import predict
from stages.publish.core.plan import T_PUBLISHED_MS
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


def _secured(**settings: Any) -> tuple[httpx.AsyncClient, LoadedModel, ModelFollower]:
    model = LoadedModel(full_export(ModelSpec("dcn", 3, (6,), 1), np.random.default_rng(1)),
                        "7", "full", 0)
    registry = types.SimpleNamespace(name="m")
    follower = ModelFollower(registry, "production", Path("."), 1.0)  # type: ignore[arg-type]
    follower.current = model
    app = create_app(follower, PublishSettings(**settings), follow=False)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return client, model, follower


@pytest.mark.anyio
async def test_a_token_guards_predict_and_version_but_not_health() -> None:
    client, _, _ = _secured(serve_token="s3cret-token")
    good = {"authorization": "Bearer s3cret-token"}
    async with client:
        bare = await client.post("/predict", content="\n".join(ROWS))
        wrong = await client.post("/predict", content="\n".join(ROWS),
                                  headers={"authorization": "Bearer nope"})
        basic = await client.get("/version", headers={"authorization": "Basic s3cret-token"})
        version_bare = await client.get("/version")
        health = await client.get("/health")
        ok = await client.post("/predict", content="\n".join(ROWS), headers=good)
        version_ok = await client.get("/version", headers=good)
    for resp in (bare, wrong, basic, version_bare):
        assert resp.status_code == 401, resp.text
        assert "bearer token" in resp.json()["error"]
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "s3cret" not in resp.text
    assert health.status_code == 200 and health.json()["version"] == "7"
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == len(ROWS)
    assert version_ok.status_code == 200 and version_ok.json()["version"] == "7"


@pytest.mark.anyio
async def test_no_token_set_means_no_auth() -> None:
    client, _, _ = _secured()
    async with client:
        resp = await client.post("/predict", content="\n".join(ROWS),
                                 headers={"authorization": "Bearer anything"})
    assert resp.status_code == 200


class _Gate(LoadedModel):
    """Predicts only once `release` is set; counts the predictions that started."""

    started = threading.Semaphore(0)
    release = threading.Event()

    def predict(self, inputs: Any) -> Any:
        self.started.release()
        if not self.release.wait(10):
            raise TimeoutError("never released")
        return super().predict(inputs)


@pytest.mark.anyio
async def test_over_the_concurrency_limit_is_503_then_served_again() -> None:
    client, model, holder = _secured(serve_max_concurrency=2)
    holder.current = _Gate(model.export, "7", "full", 0)
    gate = holder.current
    async with client:
        first = [asyncio.create_task(client.post("/predict", content="\n".join(ROWS)))
                 for _ in range(2)]
        for _ in range(2):
            while not gate.started.acquire(blocking=False):
                await asyncio.sleep(0.01)
        over = await client.post("/predict", content="\n".join(ROWS))
        health = await client.get("/health")  # never limited
        gate.release.set()
        done = await asyncio.gather(*first)
        after = await client.post("/predict", content="\n".join(ROWS))
    assert over.status_code == 503 and "2 requests in flight" in over.json()["error"]
    assert over.headers["retry-after"] == "1"
    assert health.status_code == 200
    assert [r.status_code for r in done] == [200, 200] and after.status_code == 200


def test_the_settings_read_the_token_and_limit_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRESHREC_PUBLISH_SERVE_TOKEN", "from-env")
    monkeypatch.setenv("FRESHREC_PUBLISH_SERVE_MAX_CONCURRENCY", "3")
    settings = PublishSettings()
    assert settings.serve_token is not None
    assert settings.serve_token.get_secret_value() == "from-env"
    assert settings.serve_max_concurrency == 3
    assert "from-env" not in repr(settings) and "from-env" not in settings.model_dump_json()


@pytest.mark.anyio
async def test_health_and_version_report_staleness_and_the_last_error() -> None:
    client, _, follower = _secured()
    published = int(time.time() * 1000) - 90_000
    follower._published = ("7", published)
    follower.last_error = "MLflow at http://127.0.0.1:5000 failed to read a model version"
    async with client:
        health = (await client.get("/health")).json()
        version = (await client.get("/version")).json()
    for body in (health, version):
        assert 90 <= body["staleness_s"] < 120
        assert body["last_error"].startswith("MLflow at")
    follower._published = ("6", published)  # tags of another version: unknown, not wrong
    assert follower.staleness_s(follower.current) is None  # type: ignore[arg-type]


def test_the_follower_keeps_passwords_out_of_its_last_error() -> None:
    class _Down:
        name = "m"

        def alias_version(self, alias: str) -> int:
            raise ServiceUnavailable(
                "MLflow at http://bob:hunter2@127.0.0.1:1 failed to read an alias")

    follower = ModelFollower(_Down(), "production", Path("."), 1.0)  # type: ignore[arg-type]
    assert follower.poll_once() is False
    assert follower.last_error is not None
    assert "hunter2" not in follower.last_error and "bob:***@" in follower.last_error


def test_the_follower_reads_when_its_version_was_registered(tmp_path: Path) -> None:
    export = full_export(ModelSpec("dcn", 3, (6,), 1), np.random.default_rng(1))
    tags = {T_PUBLISHED_MS: str(int(time.time() * 1000) - 5_000)}

    class _Registry:
        name = "m"
        client = types.SimpleNamespace(
            get_model_version=lambda name, version: types.SimpleNamespace(tags=tags))

        def alias_version(self, alias: str) -> int:
            return 3

        def materialize(self, version: int, work: Path, have: Any) -> Any:
            return export

    follower = ModelFollower(_Registry(), "production", tmp_path, 1.0)  # type: ignore[arg-type]
    assert follower.poll_once() is True
    assert follower.current is not None and follower.current.version == "3"
    staleness = follower.staleness_s(follower.current)
    assert staleness is not None and 5 <= staleness < 30
