"""Settings of the publish stage and of serving. Env prefix `FRESHREC_PUBLISH_`."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from stages.common.settings import settings_config


class PublishSettings(BaseSettings):
    """Publisher cadence, snapshot policy and quality gate; serving limits, auth and polling."""

    model_config = settings_config("publish")

    interval_s: float = Field(
        10.0, gt=0, le=3600, description="Seconds between publisher polls of the trainer runs."
    )
    full_every: int = Field(
        10, ge=1, le=10_000,
        description="Every K-th registry version is a full snapshot, the others deltas against "
        "the previous version (1: every version is full). The one setting that decides it.",
    )
    gate_tolerance: float = Field(
        0.005, ge=0, le=1,
        description="The quality gate lets production move when the new version's progressive "
        "AUC is at least production's minus this.",
    )
    keep_versions: int = Field(
        50, ge=0, le=1_000_000,
        description="Registry retention: after each registration keep the newest N versions, "
        "production, the newest N entries of the production history (rollback) and every "
        "version their delta chains apply onto; delete the other versions and their artifacts "
        "(0: keep all).",
    )
    keep_trainer_exports: int = Field(
        3, ge=0, le=1_000_000,
        description="Trainer exports (`exports/<seq>` artifacts of the trainer run) kept after "
        "the publisher has folded and registered them; older ones are deleted (0: keep all). "
        "A restarted publisher rebuilds from the registry, not from trainer exports.",
    )
    trainer_run_id: str | None = Field(
        None, description="Follow this trainer run; default: the newest run tagged "
        "freshrec.role=trainer in the experiment."
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535,
        description="Serve the publisher's Prometheus metrics at http://127.0.0.1:PORT/metrics "
        "while it runs (unset: off).",
    )
    work_dir: str | None = Field(
        None, description="Scratch directory for downloads; default: <state_dir>/publish."
    )
    notify: bool = Field(
        True, description="Wake-up hints on Redis pub/sub (FRESHREC_REDIS_URL): the publisher "
        "cycles as soon as the trainer announces an export and announces each version it "
        "creates or promotes, and serving checks its alias as soon as one is announced. Only "
        "hints: the publisher still polls every interval_s and serving every serve_poll_s.",
    )
    serve_poll_s: float = Field(
        2.0, gt=0, le=3600, description="Seconds between serving's checks of the alias "
        "(a version announced by the publisher is checked at once, see notify).",
    )
    serve_max_body_bytes: int = Field(
        8 << 20, ge=1024, le=1 << 30,
        description="Largest prediction request body in bytes (bigger: HTTP 413).",
    )
    serve_max_rows: int = Field(
        10_000, ge=1, le=1_000_000,
        description="Most rows in one prediction request (more: HTTP 413).",
    )
    serve_token: SecretStr | None = Field(
        None,
        description="Bearer token (secret) that POST /predict and GET /version require "
        "(`Authorization: Bearer TOKEN`; without or wrong: HTTP 401). GET /health stays open. "
        "Unset: no auth, so keep serving on 127.0.0.1.",
    )
    serve_max_concurrency: int = Field(
        64, ge=1, le=100_000,
        description="Most prediction requests handled at once; one more gets HTTP 503 with "
        "Retry-After (the client retries) instead of queueing without bound.",
    )
    serve_batch_rows: int = Field(
        256, ge=0, le=100_000,
        description="Small prediction requests (up to 16 KiB) arriving together are scored in "
        "one batch of at most this many rows (0: each alone). No request waits for a timer: a "
        "batch is what is queued by the next turn of the event loop.",
    )
    serve_workers: int = Field(
        1, ge=1, le=64,
        description="Serving processes behind the port (uvicorn's workers), each following "
        "the alias itself; /metrics sums their request series. 1: the pipeline's other stages "
        "share a small machine; serving alone on 2 cores with the load generator beside it, 2 "
        "processes answered 1.4x the 1-row and 1.2-1.9x the 1,000-row requests/s of 1 "
        "(50 clients).",
    )
