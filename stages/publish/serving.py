"""Serving: a Starlette app that scores raw Criteo rows with the version under an alias.

`ModelFollower` polls the alias; on a new version it downloads the versions it lacks (from the
one it holds when that is on the chain, else from the last full), verifies every checksum,
applies the deltas in order and replaces its `LoadedModel` in one assignment. A request reads
that reference once, so a request in flight finishes on the model it started with. A corrupt or
incomplete version is refused with an error log line and serving keeps its version.

Endpoints: POST /predict (rows as text/plain, text/tab-separated-values, octet-stream or
curl's default form type; or application/json; see `core.requests`) -> {"model",
"version", "predictions": [click probability per row, in order]}; GET /health (200 when a
model is loaded, 503 before); GET /version. /health and /version report the staleness
(`staleness_s`: seconds since the served version was registered, from its tag
`freshrec.published_at_ms`) and the follower's `last_error`.
With `serve_token` set, /predict and /version need `Authorization: Bearer TOKEN` (401
otherwise); /health stays open for load balancers. At most `serve_max_concurrency` predictions
run at once; one more gets 503 with Retry-After.
Errors are JSON {"error": "..."} with a 4xx status; an unexpected failure is a 500 whose body
says only to look at the server log (no stack trace leaves the server).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stages.common.errors import ContractError, FreshrecError
from stages.common.model_export import non_finite
from stages.common.settings import redact_text
from stages.publish.core.plan import T_PUBLISHED_MS
from stages.publish.core.requests import RequestError, json_to_inputs, text_to_inputs
from stages.publish.loaded import LoadedModel
from stages.publish.registry import Registry
from stages.publish.settings import PublishSettings

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[JSONResponse]]
class ModelFollower:
    """Follows `alias` of the registered model; `current` is the model to serve (or None)."""

    def __init__(self, registry: Registry, alias: str, work: Path, poll_s: float) -> None:
        self.registry = registry
        self.alias = alias
        self.work = work
        self.poll_s = poll_s
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        # (version, its freshrec.published_at_ms tag): the staleness of `current`
        self._published: tuple[str, int | None] = ("", None)
        self._refused: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> bool:
        """Check the alias once; True when a new model was swapped in. Never raises a
        FreshrecError: failures are logged and kept in `last_error`."""
        try:
            version = self.registry.alias_version(self.alias)
            held = self.current
            if version is None or (held and held.version == str(version)):
                return False
            if version == self._refused:
                return False
            have = (int(held.version), held.export) if held else None
            export = self.registry.materialize(version, self.work, have)
            diverged = non_finite(export)
            if diverged is not None:
                raise ContractError(diverged)
        except ContractError as exc:
            self._refused = version
            self.last_error = redact_text(f"version {version} refused: {exc}")
            log.error("refusing %s@%s v%s: %s; still serving v%s", self.registry.name,
                      self.alias, version, redact_text(str(exc)),
                      self.current.version if self.current else "none")
            return False
        except FreshrecError as exc:
            self.last_error = redact_text(str(exc))
            log.warning("could not follow %s@%s: %s", self.registry.name, self.alias,
                        self.last_error)
            return False
        self._published = (str(version), self._published_at_ms(version))
        self.current = LoadedModel(export, str(version), "full", int(time.time() * 1000))
        self.last_error = None
        log.info("now serving %s v%s (%d rows)", self.registry.name, version, len(export.ids))
        return True

    def _published_at_ms(self, version: int) -> int | None:
        """The version's registration time (ms), None when MLflow cannot say: serving goes on."""
        try:
            mv = self.registry.client.get_model_version(self.registry.name, str(version))
            value = dict(mv.tags or {}).get(T_PUBLISHED_MS)
            return int(value) if value is not None else None
        except Exception as exc:  # MLflow or the network; the staleness is then unknown
            log.warning("cannot read when v%s was registered: %s", version,
                        redact_text(f"{type(exc).__name__}: {exc}")[:300])
            return None

    def staleness_s(self, model: LoadedModel, now_ms: int | None = None) -> float | None:
        """Seconds since `model`'s version was registered; None when unknown."""
        version, published = self._published
        if published is None or version != model.version:
            return None
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return round(max(0, now - published) / 1000.0, 3)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # keep following whatever MLflow throws at us
                log.exception("unexpected error while following the alias")
            self._stop.wait(self.poll_s)

    def start(self) -> None:
        """Follow the alias in a daemon thread (the first poll happens at once)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="model-follower", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


# Bodies read as raw rows; curl sends form-urlencoded by default, so it is accepted too.
_TEXT_TYPES = ("text/plain", "text/tab-separated-values", "application/octet-stream",
               "application/x-www-form-urlencoded")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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

    async def guarded(request: Request) -> JSONResponse:
        nonlocal in_flight
        if token is not None and not _authorized(request, token):
            response = _error(401, "missing or wrong bearer token: send "
                                   "Authorization: Bearer <FRESHREC_PUBLISH_SERVE_TOKEN>")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if limit is not None and in_flight >= limit:
            response = _error(503, f"busy: {limit} requests in flight; retry shortly")
            response.headers["Retry-After"] = "1"
            return response
        in_flight += 1  # one event loop: no await between the check and the increment
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return guarded


def create_app(
    follower: ModelFollower, settings: PublishSettings, *, follow: bool = True
) -> Starlette:
    """The serving app. With `follow`, its lifespan starts and stops the follower thread."""
    max_rows = settings.serve_max_rows

    async def predict(request: Request) -> JSONResponse:
        try:
            ctype = request.headers.get("content-type", "text/plain").split(";")[0].strip()
            if ctype not in _TEXT_TYPES and ctype != "application/json":
                raise RequestError(415, f"content type {ctype!r}: send text/plain rows or JSON")
            body = await _read_body(request, settings.serve_max_body_bytes)
            model = follower.current  # read once: a swap does not affect this request
            if model is None:
                return _error(503, "no model loaded yet; retry shortly")
            parse = json_to_inputs if ctype == "application/json" else text_to_inputs
            inputs = await run_in_threadpool(parse, body, max_rows)
            probs = await run_in_threadpool(model.predict, inputs)
        except RequestError as exc:
            return _error(exc.status, str(exc))
        except Exception:
            log.exception("prediction failed")
            return _error(500, "internal error; see the server log")
        return JSONResponse(
            {"model": follower.registry.name, "version": model.version,
             "predictions": [float(p) for p in probs]}
        )

    async def health(request: Request) -> JSONResponse:
        model = follower.current
        if model is None:
            return JSONResponse({"status": "loading", "error": follower.last_error,
                                 "last_error": follower.last_error}, 503)
        return JSONResponse({"status": "ok", "version": model.version,
                             "staleness_s": follower.staleness_s(model),
                             "last_error": follower.last_error})

    async def version(request: Request) -> JSONResponse:
        model = follower.current
        body: dict[str, Any] = {"model": follower.registry.name, "alias": follower.alias,
                                "version": None, "last_error": follower.last_error,
                                "staleness_s": None}
        if model is not None:
            body.update(version=model.version, staleness_s=follower.staleness_s(model),
                        export_seq=model.export.export_seq,
                        rows=int(len(model.export.ids)), loaded_at_ms=model.loaded_at_ms,
                        meta=model.export.meta)
        return JSONResponse(body)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return _error(status, str(detail))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if follow:
            follower.start()
        try:
            yield
        finally:
            if follow:
                follower.stop()

    return Starlette(
        routes=[
            Route("/predict", _guarded(predict, settings, settings.serve_max_concurrency),
                  methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/version", _guarded(version, settings, None), methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: http_error},
        lifespan=lifespan,
    )
