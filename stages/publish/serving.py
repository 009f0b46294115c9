"""Serving: a FastAPI app that scores Criteo rows with the version under an alias.

`follower.ModelFollower` follows the alias (polled, and checked at once when the publisher
announces a version) and swaps each new version in with one assignment. A request reads that
reference once, so a request in flight finishes on the model it started with.

Endpoints:
- POST /predict (rows as text/plain, text/tab-separated-values, octet-stream or curl's default
  form type; or application/json; see `core.requests`) -> {"model", "version", "predictions":
  [click probability per row, in order]};
- POST /invocations, MLflow's scoring protocol (`core.invocations`: dataframe_split,
  dataframe_records, instances, inputs, CSV, raw rows) -> {"predictions": [...]}, the same
  numbers as /predict for the same rows;
- GET /health (200 when a model is loaded, 503 before), GET /ping (MLflow's: 200 or 503, no
  body), GET /version. /health and /version report the staleness (`staleness_s`: seconds since
  the served version was registered, from its tag `freshrec.published_at_ms`) and the
  follower's `last_error`;
- GET /metrics (Prometheus text, `metrics_prom`), GET /openapi.json and /docs.

With `serve_token` set, /predict, /invocations and /version need `Authorization: Bearer TOKEN`
(401 otherwise). /health, /ping, /metrics, /openapi.json and /docs stay open: load balancers
and Prometheus scrape without credentials, and none of them shows a prediction or a secret
(the version number and request counts are what they show; keep the port off the public
network when that matters). At most `serve_max_concurrency` scoring requests run at once; one
more gets 503 with Retry-After.
Errors are JSON {"error": "..."} with a 4xx status (on /invocations also MLflow's
"error_code" and "message"); an unexpected failure is a 500 whose body says only to look at
the server log (no stack trace leaves the server).

Speed: /predict and /invocations are plain Starlette routes inside the FastAPI app (FastAPI's
per-request dependency solving costs about 20 us, measured; their OpenAPI entries are written
here by hand), replies are serialized with orjson, and a request body up to `_INLINE_MAX_BYTES`
is parsed on the event loop (a thread hop costs more than scoring a few rows) and scored with
the other small requests of the same turn of the loop (`batching.MicroBatcher`, at most
`serve_batch_rows` rows a batch); bigger ones in one worker-thread call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stages.publish.batching import MicroBatcher, score_rows
from stages.publish.core.invocations import csv_invocation, json_invocation
from stages.publish.core.requests import (
    RequestError, RequestParser, RequestRows, json_to_rows, text_to_rows,
)
from stages.publish.follower import ModelFollower
from stages.publish.loaded import LoadedModel
from stages.publish.metrics_prom import CONTENT_TYPE, ServingMetrics
from stages.publish.openapi import scoring_paths
from stages.publish.settings import PublishSettings

__all__ = ["ModelFollower", "create_app"]  # ModelFollower: imported from here by callers
log = logging.getLogger(__name__)

# (response, rows scored)
Handler = Callable[[Request], Awaitable[tuple[Response, int]]]
# (body, max rows, the served model's request parser: its feature schema)
Parser = Callable[[bytes, int, RequestParser], RequestRows]
# Bodies up to this size are scored on the event loop: measured, a thread hop costs more than
# parsing and scoring ~100 rows; bigger bodies go to a worker thread so that the loop keeps
# accepting requests.
_INLINE_MAX_BYTES = 16 << 10
# Threads scoring the bodies over `inline_max_bytes`, one request each at a time. Measured
# with 50 clients sending 1,000-row bodies on 2 cores (interleaved runs, at load 6-9 from
# other jobs): 1 thread 21 and 28 requests/s, p99 3.0 and 1.9 s; 2 threads 12 and 20;
# Starlette's pool of 40 threads 13 and 22, p99 4.6 and 4.3 s (threads fighting over the GIL
# and the cores, OpenBLAS's own threads included).
_SCORE_THREADS = 1
# Bodies read as raw rows; curl sends form-urlencoded by default, so it is accepted too.
_TEXT_TYPES = ("text/plain", "text/tab-separated-values", "application/octet-stream",
               "application/x-www-form-urlencoded")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _mlflow_error(status: int, message: str) -> Response:
    """The error body of MLflow's scoring server, with freshrec's `error` key too."""
    code = "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST"
    return Response(orjson.dumps({"error": message, "error_code": code, "message": message}),
                    status_code=status, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is {declared} bytes; at most {limit} are accepted")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _authorized(request: Request, token: bytes) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)


def _guarded(handler: Handler, settings: PublishSettings, limit: int | None) -> Handler:
    """`handler` behind the bearer token (when set) and at most `limit` at once (when given)."""
    token = settings.serve_token.get_secret_value().encode() if settings.serve_token else None
    in_flight = 0

    async def guarded(request: Request) -> tuple[Response, int]:
        nonlocal in_flight
        if token is not None and not _authorized(request, token):
            response = _error(401, "missing or wrong bearer token: send "
                                   "Authorization: Bearer <FRESHREC_PUBLISH_SERVE_TOKEN>")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response, 0
        if limit is not None and in_flight >= limit:
            response = _error(503, f"busy: {limit} requests in flight; retry shortly")
            response.headers["Retry-After"] = "1"
            return response, 0
        in_flight += 1  # one event loop: no await between the check and the increment
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return guarded


def _measured(endpoint: str, handler: Handler, metrics: ServingMetrics
              ) -> Callable[[Request], Awaitable[Response]]:
    """`handler` counted in the metrics: status, seconds and rows of every answer."""

    async def measured(request: Request) -> Response:
        start = time.perf_counter()
        response, rows = await handler(request)
        metrics.observe(endpoint, response.status_code, time.perf_counter() - start, rows)
        return response

    return measured


def _plain(handler: Callable[[Request], Awaitable[Response]]) -> Handler:
    async def plain(request: Request) -> tuple[Response, int]:
        return await handler(request), 0

    return plain


def _score(parse: Parser, body: bytes, model: LoadedModel, max_rows: int
           ) -> tuple[npt.NDArray[np.float64], int]:
    rows = parse(body, max_rows, model.requests)
    return score_rows(model, rows), len(rows)


def _predict_parser(ctype: str) -> Parser:
    if ctype == "application/json":
        return json_to_rows
    if ctype in _TEXT_TYPES:
        return text_to_rows
    raise RequestError(415, f"content type {ctype!r}: send text/plain rows or JSON")


def _invocations_parser(ctype: str) -> Parser:
    if ctype == "application/json":
        return json_invocation
    if ctype == "text/csv":
        return csv_invocation
    if ctype in _TEXT_TYPES:
        return text_to_rows
    raise RequestError(415, f"content type {ctype!r}: send application/json (dataframe_split, "
                            "dataframe_records, instances or inputs), text/csv or raw rows")


class _ServingApp(FastAPI):
    """FastAPI, but a POST to a scoring path goes straight to its endpoint: FastAPI's
    middleware stack (error middleware, telemetry checks, exit stack) and the router cost
    more than a 1-row request's parsing and scoring (measured: a hello-world route served
    10,800 requests/s through that stack, 24,000 as a bare ASGI app, wrk -c 50 on 2 cores)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot_posts: dict[str, Callable[[Request], Awaitable[Response]]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        endpoint = self.hot_posts.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST" or scope.get("root_path"):
            await super().__call__(scope, receive, send)
            return
        try:
            response = await endpoint(Request(scope, receive))
        except Exception:  # the endpoints answer their errors; this is a bug
            log.exception("scoring endpoint failed")
            response = _error(500, "internal error; see the server log")
        await response(scope, receive, send)


def create_app(
    follower: ModelFollower, settings: PublishSettings, *, follow: bool = True,
    inline_max_bytes: int = _INLINE_MAX_BYTES, on_stop: Callable[[], None] | None = None,
) -> FastAPI:
    """The serving app. With `follow`, its lifespan starts and stops the follower thread;
    `on_stop` is called when it ends (closing what the follower was given).
    Bodies up to `inline_max_bytes` are scored on the event loop (0: every body in a thread)."""
    metrics = ServingMetrics(follower)
    batcher = MicroBatcher(settings.serve_batch_rows) if settings.serve_batch_rows else None
    # one thread scores the big bodies, one after another (`_SCORE_THREADS`)
    scorer_threads = ThreadPoolExecutor(_SCORE_THREADS, thread_name_prefix="freshrec-score")
    max_rows = settings.serve_max_rows
    limit = settings.serve_max_body_bytes

    def scoring(choose: Callable[[str], Parser],
                render: Callable[[LoadedModel, npt.NDArray[np.float64]], bytes],
                error: Callable[[int, str], Response]) -> Handler:
        async def handler(request: Request) -> tuple[Response, int]:
            try:
                ctype = request.headers.get("content-type", "text/plain")
                parse = choose(ctype.split(";")[0].strip())
                body = await _read_body(request, limit)
                model = follower.current  # read once: a swap does not affect this request
                if model is None:
                    return error(503, "no model loaded yet; retry shortly"), 0
                if len(body) <= inline_max_bytes:
                    parsed = parse(body, max_rows, model.requests)
                    rows = len(parsed)
                    probs = (score_rows(model, parsed) if batcher is None
                             else await batcher.score(model, parsed))
                else:
                    probs, rows = await asyncio.get_running_loop().run_in_executor(
                        scorer_threads, _score, parse, body, model, max_rows)
                content = render(model, probs)
            except RequestError as exc:
                return error(exc.status, str(exc)), 0
            except Exception:
                log.exception("prediction failed")
                return error(500, "internal error; see the server log"), 0
            return Response(content, media_type="application/json"), rows

        return handler

    def render_predict(model: LoadedModel, probs: npt.NDArray[np.float64]) -> bytes:
        return orjson.dumps({"model": follower.model_name, "version": model.version,
                             "predictions": probs}, option=orjson.OPT_SERIALIZE_NUMPY)

    def render_invocations(model: LoadedModel, probs: npt.NDArray[np.float64]) -> bytes:
        return orjson.dumps({"predictions": probs}, option=orjson.OPT_SERIALIZE_NUMPY)

    async def health(request: Request) -> JSONResponse:
        model = follower.current
        if model is None:
            return JSONResponse({"status": "loading", "error": follower.last_error,
                                 "last_error": follower.last_error}, 503)
        return JSONResponse({"status": "ok", "version": model.version,
                             "staleness_s": follower.staleness_s(model),
                             "last_error": follower.last_error})

    async def ping(request: Request) -> Response:
        return Response("\n", 200 if follower.current is not None else 503,
                        media_type="application/json")

    async def version(request: Request) -> Response:
        model = follower.current
        body: dict[str, Any] = {"model": follower.model_name, "alias": follower.alias,
                                "version": None, "last_error": follower.last_error,
                                "staleness_s": None}
        if model is not None:
            body.update(version=model.version, staleness_s=follower.staleness_s(model),
                        export_seq=model.export.export_seq,
                        rows=int(len(model.export.ids)), loaded_at_ms=model.loaded_at_ms,
                        meta=model.export.meta)
        return JSONResponse(body)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return _error(status, str(detail))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if follow:
            follower.start()
        try:
            yield
        finally:
            scorer_threads.shutdown(wait=False, cancel_futures=True)
            if follow:
                follower.stop()
            if on_stop is not None:
                on_stop()

    app = _ServingApp(
        title="freshrec serve", version="1",
        description="Click probabilities for Criteo rows from the model version under an "
        "MLflow registry alias, hot-swapped as the alias moves.",
        lifespan=lifespan, redoc_url=None,
        exception_handlers={HTTPException: http_error, Exception: http_error},
    )
    most = settings.serve_max_concurrency
    hot = {
        "/predict": scoring(_predict_parser, render_predict, _error),
        "/invocations": scoring(_invocations_parser, render_invocations, _mlflow_error),
    }
    for path, handler in hot.items():  # plain routes: no per-request dependency solving
        endpoint = _measured(path, _guarded(handler, settings, most), metrics)
        app.router.add_route(path, endpoint, methods=["POST"], include_in_schema=False)
        app.hot_posts[path] = endpoint
    described = {"/health": (health, False, "200: a model is loaded (version, staleness_s, "
                             "last_error); 503: none yet."),
                 "/ping": (ping, False, "MLflow's liveness check: 200 when a model is loaded, "
                           "503 before."),
                 "/version": (version, True, "The served version, its export seq, table "
                              "rows, staleness_s and the export meta (bearer token when set)."),
                 "/metrics": (prometheus, False, "Prometheus text exposition format.")}
    for path, (endpoint, secured, doc) in described.items():
        wrapped = _plain(endpoint)
        if secured:
            wrapped = _guarded(wrapped, settings, None)
        app.add_api_route(path, _measured(path, wrapped, metrics), methods=["GET"],
                          summary=doc.split(":")[0].split(".")[0], description=doc,
                          name=path.strip("/"))

    def openapi() -> dict[str, Any]:
        model = follower.current  # the bodies follow the served model's feature schema
        served = model.schema if model is not None else None
        served_id = served.schema_id if served is not None else None
        if app.openapi_schema is None or app.openapi_schema.get("x-feature-schema") != served_id:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schema["paths"].update(scoring_paths(max_rows, settings.serve_token is not None,
                                                 served))
            schema["x-feature-schema"] = served_id
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
