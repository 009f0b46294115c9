"""`freshrec serve`'s processes: one serving app, or `serve_workers` of them behind one port.

With several workers, uvicorn's supervisor binds the port and starts each worker as a fresh
process (`worker_app`, an app factory by import string; the command's options reach it in
the environment variable `WORKER_ENV` as JSON, the token as its file's path, never the token
itself). Each worker is a whole serving app: it follows the alias itself (its own follower
and wake-up listener), so each swaps a new version in on its own, within a poll of the
others; /health and /version answer for the process that takes the connection. /metrics sums
the request series of all workers (prometheus_client's multiprocess mode, in a temporary
directory unless PROMETHEUS_MULTIPROC_DIR is set); its model series are the answering
process's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI

from stages.publish.metrics_prom import MULTIPROCESS_ENV
from stages.publish.settings import PublishSettings

# not FRESHREC_*: no setting reads it, and `freshrec settings` warns about those
WORKER_ENV = "_FRESHREC_SERVE_WORKER_OPTIONS"
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeOptions:
    """The `freshrec serve` options a worker needs (None: the setting's value)."""

    model: str | None
    alias: str
    token_file: str | None
    max_concurrency: int | None
    workers: int | None


def build_app(options: ServeOptions) -> FastAPI:
    """One serving app: settings, the alias follower and its wake-up listener (closed with
    the app)."""
    from stages.common.settings import CommonSettings, load_settings
    from stages.publish.registry import Registry
    from stages.publish.serving import ModelFollower, create_app
    from stages.publish.wakeup import Wakeup, versions_channel

    _one_blas_thread()
    common = load_settings(CommonSettings,
                           **({"model_name": options.model} if options.model else {}))
    settings = _settings(options)
    # workers share it: each download goes to a temporary directory of its own
    work = Path(settings.work_dir) if settings.work_dir else common.state_dir / "serve"
    work.mkdir(parents=True, exist_ok=True)
    wakeup = None
    if settings.notify:
        wakeup = Wakeup.from_settings(
            common, versions_channel(common.redis_namespace, common.model_name), "serving")
    follower = ModelFollower(Registry(common), options.alias, work, settings.serve_poll_s,
                             wakeup)
    return create_app(follower, settings, on_stop=wakeup.close if wakeup else None)


def _one_blas_thread() -> None:
    """One BLAS thread in this process. OpenBLAS's default, a thread per core, made every
    forward pass of a few rows keep the second core spinning for no gain: same latency, twice
    the CPU (measured on the bench model: 25 rows 0.17 ms either way, CPU 0.33 vs 0.17 ms), CPU
    that the event loop, the other workers and the clients need. 1-row requests at 50
    connections went 3,900-4,100 -> 5,600-6,000 requests/s (bench/RESULTS-serving.md, session
    6). `--workers` is how serving uses more cores."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn's factory), from `WORKER_ENV`."""
    return build_app(ServeOptions(**json.loads(os.environ[WORKER_ENV])))


def serve(options: ServeOptions, host: str, port: int, access_log: bool) -> None:
    """Serve until stopped: in this process, or in `serve_workers` worker processes."""
    import uvicorn

    settings = _settings(options)
    if settings.serve_token is None and host not in _LOCAL_HOSTS:
        logging.getLogger("stages.publish.serving").warning(
            "serving on %s without a token: anyone who reaches the port can query the "
            "model; set FRESHREC_PUBLISH_SERVE_TOKEN", host)
    workers = options.workers or settings.serve_workers
    # uvicorn uses uvloop and httptools when installed (the publish extra brings them)
    if workers == 1:
        uvicorn.run(build_app(options), host=host, port=port, access_log=access_log)
        return
    os.environ[WORKER_ENV] = json.dumps(asdict(options))
    shared = None
    if not os.environ.get(MULTIPROCESS_ENV):  # the workers' request counts, summed
        shared = tempfile.mkdtemp(prefix="freshrec-serve-metrics-")
        os.environ[MULTIPROCESS_ENV] = shared
    try:
        uvicorn.run("stages.publish.serve_main:worker_app", factory=True, workers=workers,
                    host=host, port=port, access_log=access_log)
    finally:
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)


def _settings(options: ServeOptions) -> PublishSettings:
    from stages.common.settings import load_settings

    overrides: dict[str, object] = {}
    if options.token_file is not None:
        overrides["serve_token"] = Path(options.token_file).read_text(encoding="utf-8").strip()
    if options.max_concurrency is not None:
        overrides["serve_max_concurrency"] = options.max_concurrency
    return load_settings(PublishSettings, **overrides)
