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
from prometheus_client.parser import text_string_to_metric_families

from stages.common.errors import ServiceUnavailable
from stages.common.model_export import ModelSpec
from stages.common.reference_model import predict
from stages.common.schema import load_schema
from stages.publish.core.plan import T_PUBLISHED_MS
from stages.publish.core.requests import text_to_inputs
from stages.publish.loaded import LoadedModel
from stages.publish.serving import ModelFollower, create_app
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import criteo_rows, full_export

ROWS = criteo_rows(4, np.random.default_rng(5))
CRITEO = load_schema("criteo")
DENSE_NAMES = tuple(f.name for f in CRITEO.dense)
CAT_NAMES = tuple(f.name for f in CRITEO.categorical)


def _client(
    loaded: bool = True, inline_max_bytes: int = 16 << 10, **limits: int
) -> tuple[httpx.AsyncClient, LoadedModel, ModelFollower]:
    model = LoadedModel(full_export(ModelSpec("dcn", 3, (6,), 1), np.random.default_rng(1)),
                        "7", "full", 0)
    registry = types.SimpleNamespace(name="m")  # never called: follow=False, current preset
    follower = ModelFollower(registry, "production", Path("."), 1.0)  # type: ignore[arg-type]
    follower.current = model if loaded else None
    app = create_app(follower, PublishSettings(**limits), follow=False,  # type: ignore[arg-type]
                     inline_max_bytes=inline_max_bytes)
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
    inputs = text_to_inputs("\n".join(ROWS).encode(), 10, model.requests)
    want = predict(model.export, inputs.dense, inputs.ids)
    for resp in (text, js):
        assert resp.status_code == 200, resp.text
        assert resp.json()["version"] == "7"
        np.testing.assert_allclose(resp.json()["predictions"], want, atol=1e-6)  # float32
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
    client, model, holder = _client(inline_max_bytes=0)  # predictions in a thread
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


def _secured(inline_max_bytes: int = 16 << 10,
             **settings: Any) -> tuple[httpx.AsyncClient, LoadedModel, ModelFollower]:
    model = LoadedModel(full_export(ModelSpec("dcn", 3, (6,), 1), np.random.default_rng(1)),
                        "7", "full", 0)
    registry = types.SimpleNamespace(name="m")
    follower = ModelFollower(registry, "production", Path("."), 1.0)  # type: ignore[arg-type]
    follower.current = model
    app = create_app(follower, PublishSettings(**settings), follow=False,
                     inline_max_bytes=inline_max_bytes)
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
    client, model, holder = _secured(inline_max_bytes=0, serve_max_concurrency=2)
    holder.current = _Gate(model.export, "7", "full", 0)
    gate = holder.current
    async with client:
        first = [asyncio.create_task(client.post("/predict", content="\n".join(ROWS)))
                 for _ in range(2)]
        # one thread scores big bodies: the first predicts, the second waits for the thread
        while not gate.started.acquire(blocking=False):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the second is in flight too, queued for the thread
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
    assert follower.swap_failures == {"refused": 0, "error": 1}
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

        def served_schema(self, version: int, spec: Any, work: Path) -> Any:
            return None  # the preset of the spec

    follower = ModelFollower(_Registry(), "production", tmp_path, 1.0)  # type: ignore[arg-type]
    assert follower.poll_once() is True
    assert follower.current is not None and follower.current.version == "3"
    staleness = follower.staleness_s(follower.current)
    assert staleness is not None and 5 <= staleness < 30


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


@pytest.mark.anyio
async def test_invocations_answer_what_predict_answers_in_every_form() -> None:
    rows = criteo_rows(12, np.random.default_rng(8))
    assert any("\t\t" in r for r in rows)  # some values missing
    client, _, _ = _client()
    async with client:
        want = (await client.post("/predict", content="\n".join(rows))).json()["predictions"]
        for name, (ctype, body) in _protocol_bodies(rows).items():
            kwargs: dict[str, Any] = ({"json": body} if ctype == "application/json" else
                                      {"content": body, "headers": {"content-type": ctype}})
            reply = await client.post("/invocations", **kwargs)
            assert reply.status_code == 200, (name, reply.text)
            assert list(reply.json()) == ["predictions"], name
            np.testing.assert_allclose(reply.json()["predictions"], want, atol=1e-5,
                                       err_msg=name)


@pytest.mark.anyio
async def test_invocations_errors_in_mlflow_shape() -> None:
    client, _, _ = _client(serve_max_rows=3)
    async with client:
        bad_json = await client.post("/invocations", content=b"{",
                                     headers={"content-type": "application/json"})
        two_keys = await client.post("/invocations", json={"instances": [], "inputs": []})
        unknown = await client.post("/invocations", json={"dataframe_records": [{"X1": 1}]})
        bad_id = await client.post("/invocations", json={"dataframe_split": {
            "columns": ["C1"], "data": [["nothex!!"]]}})
        fractional = await client.post("/invocations", json={"dataframe_records": [
            {"I1": 1.5}]})
        too_many = await client.post("/invocations", json={"inputs": ROWS})
        wrong_type = await client.post("/invocations", content=b"x",
                                       headers={"content-type": "image/png"})
    assert bad_json.status_code == 400 and bad_json.json()["error_code"] == "BAD_REQUEST"
    assert two_keys.status_code == 400 and "exactly one of" in two_keys.json()["message"]
    assert unknown.status_code == 422 and "unknown field 'X1'" in unknown.json()["error"]
    assert bad_id.status_code == 422 and "C1 must be a string of 1 to 8 hex" in bad_id.json()["error"]
    assert fractional.status_code == 422 and "I1 must be" in fractional.json()["error"]
    assert too_many.status_code == 413
    assert wrong_type.status_code == 415


@pytest.mark.anyio
async def test_ping_is_200_once_a_model_is_loaded() -> None:
    client, model, follower = _client(loaded=False)
    async with client:
        before = await client.get("/ping")
        follower.current = model
        after = await client.get("/ping")
    assert before.status_code == 503 and after.status_code == 200


@pytest.mark.anyio
async def test_the_token_guards_invocations_but_not_ping_metrics_or_docs() -> None:
    client, _, _ = _secured(serve_token="s3cret-token")
    async with client:
        bare = await client.post("/invocations", json={"inputs": ROWS})
        ok = await client.post("/invocations", json={"inputs": ROWS},
                               headers={"authorization": "Bearer s3cret-token"})
        open_ = [await client.get(p) for p in ("/ping", "/metrics", "/openapi.json", "/docs")]
    assert bare.status_code == 401 and ok.status_code == 200
    assert [r.status_code for r in open_] == [200] * 4
    assert all("s3cret" not in r.text for r in open_)


@pytest.mark.anyio
async def test_openapi_describes_every_endpoint() -> None:
    client, _, _ = _client()
    async with client:
        schema = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    for path in ("/predict", "/invocations", "/ping", "/health", "/version", "/metrics"):
        assert path in schema["paths"], path
    body = schema["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/csv", "text/plain"} <= set(body)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.mark.anyio
async def test_metrics_parse_with_prometheus_and_count_the_requests() -> None:
    client, _, follower = _client()
    follower._published = ("7", int(time.time() * 1000) - 30_000)
    follower.swap_failures["refused"] = 1
    async with client:
        for _ in range(3):
            assert (await client.post("/predict", content="\n".join(ROWS))).status_code == 200
        assert (await client.post("/invocations", json={"inputs": ROWS})).status_code == 200
        assert (await client.post("/predict", content=b"1\t2")).status_code == 422
        assert (await client.get("/ping")).status_code == 200
        text = (await client.get("/metrics")).text
    got = _samples(text)
    req = "freshrec_serve_requests_total"
    assert got[(req, (("endpoint", "/predict"), ("status", "200")))] == 3
    assert got[(req, (("endpoint", "/predict"), ("status", "422")))] == 1
    assert got[(req, (("endpoint", "/invocations"), ("status", "200")))] == 1
    assert got[(req, (("endpoint", "/ping"), ("status", "200")))] == 1
    assert got[("freshrec_serve_rows_total", (("endpoint", "/predict"),))] == 3 * len(ROWS)
    assert got[("freshrec_serve_rows_total", (("endpoint", "/invocations"),))] == len(ROWS)
    hist = "freshrec_serve_request_duration_seconds_count"
    assert got[(hist, (("endpoint", "/predict"),))] == 4
    model = (("alias", "production"), ("model", "m"))
    assert got[("freshrec_serve_model_version", model)] == 7
    assert 30 <= got[("freshrec_serve_model_staleness_seconds", model)] < 90
    assert got[("freshrec_serve_swap_failures_total", (("reason", "refused"),))] == 1
    assert got[("freshrec_serve_swap_failures_total", (("reason", "error"),))] == 0
