"""Run the features worker in this process until stopped: the entrypoint of the CLI and flows."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from stages.common.errors import FeaturesError, require
from stages.common.settings import CommonSettings
from stages.features.app import build_app
from stages.features.pipeline import FeaturesRuntime
from stages.features.settings import FeaturesSettings

log = logging.getLogger("freshrec.features")


@dataclass(frozen=True)
class FeaturesSummary:
    """What one `run_features` call did (this worker only; the store keeps all-time counters).

    `events_in == samples_out + dead_letters + duplicates_dropped_by_id` (re-sent events: an
    event id already stored, at a new offset; `dedupe_unchecked` samples were stored without
    that check, being older than the id window); `duplicates_skipped` events were replays of
    offsets already stored; `stop_reason` is "stop", "idle" or "signal". `events_per_s`: the
    records of all micro-batches but the first over the time from the first to the last one
    (None with fewer than two micro-batches): the processing rate without start-up and idling.

    What went wrong around it, all counted and logged: `topic_resets` (writes that found a
    recreated events topic and reset its watermarks), `topic_changes` (fetches dropped because
    the topic was recreated under the consumer), `stale_skipped` (events of a retired topic
    incarnation, not stored), `store_resets` (the store epoch changed under the worker: Redis
    came back empty), `redis_retries`, `kafka_retries` (calls retried during outages) and
    `commit_failures` (Kafka offset commits that failed; a replay follows, skipped by Redis).
    """

    events_in: int
    samples_out: int
    dead_letters: int
    duplicates_skipped: int
    batches: int
    elapsed_s: float
    stop_reason: str
    events_per_s: float | None
    topic_resets: int = 0
    topic_changes: int = 0
    stale_skipped: int = 0
    store_resets: int = 0
    redis_retries: int = 0
    kafka_retries: int = 0
    commit_failures: int = 0
    duplicates_dropped_by_id: int = 0
    dedupe_unchecked: int = 0


def _worker_class() -> Any:
    faust: Any = require("faust", "features")

    class Worker(faust.Worker):  # type: ignore[misc, name-defined]
        """faust.Worker that can be stopped from inside (and runs outside the main thread)."""

        stop_reason = "signal"
        _stop_task: asyncio.Future[None] | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.spinner = None  # it writes terminal escapes to stdout even when not a tty

        def install_signal_handlers(self) -> None:
            if threading.current_thread() is threading.main_thread():
                self.loop.add_signal_handler(signal.SIGINT, self.request_stop, "signal")
                self.loop.add_signal_handler(signal.SIGTERM, self.request_stop, "signal")

        def request_stop(self, reason: str) -> None:
            """Stop the worker gracefully (idempotent): stop services, then end `start()`."""
            if self._stop_task is None:
                self.stop_reason = reason
                self._stop_task = asyncio.ensure_future(self._stop_now(), loop=self.loop)

        async def _stop_now(self) -> None:
            await self.stop()
            if self._starting_fut is not None and not self._starting_fut.done():
                self._starting_fut.cancel()

    return Worker


def run_features(
    common: CommonSettings,
    settings: FeaturesSettings,
    *,
    stop: threading.Event | None = None,
    max_idle_s: float | None = None,
) -> FeaturesSummary:
    """Consume the events topic into the Redis feature store until stopped.

    Stops when `stop` is set, when no micro-batch arrived for `max_idle_s` seconds, or on
    SIGINT/SIGTERM (when called from the main thread). Runs its own event loop, so it may run
    in a worker thread. FeaturesError when the worker crashed; SchemaError (before consuming
    anything) when FRESHREC_SCHEMA names no valid schema or the store holds samples of another
    schema. Creates the dead-letter topic with the topic retention settings first when it is
    absent (`ensure_dead_letter_topic`).
    """
    from stages.features.topic_ids import ensure_dead_letter_topic

    ensure_dead_letter_topic(common, settings.dlq_topic, timeout_s=5.0)
    built = build_app(common, settings)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = _worker_class()(
        built.app,
        loop=loop,
        loglevel=settings.loglevel,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    runtime: FeaturesRuntime = built.runtime

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.2)
            if stop is not None and stop.is_set():
                worker.request_stop("stop")
                return
            if max_idle_s is not None and runtime.idle_s() >= max_idle_s:
                worker.request_stop("idle")
                return

    built.app.task(watch)
    started = time.monotonic()
    metrics = None
    if settings.metrics_port is not None:
        from stages.features.prom import FeaturesMetrics

        metrics = FeaturesMetrics(common, settings, runtime)
        try:
            metrics.serve(settings.metrics_port)
        except BaseException:
            loop.close()
            asyncio.set_event_loop(None)
            raise
    try:
        try:
            loop.run_until_complete(runtime.start())  # fail fast when Redis is not there
        except BaseException:
            loop.close()
            raise
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise FeaturesError(
                f"the features worker stopped with status {exc.code} (is Kafka at "
                f"{common.kafka_bootstrap} up? see the log above)"
            ) from None
    finally:
        asyncio.set_event_loop(None)
        if metrics is not None:
            metrics.close()
    if built.app.crash_reason is not None:
        raise FeaturesError(f"the features worker crashed: {built.app.crash_reason!r}")
    c = runtime.counters
    return FeaturesSummary(
        events_in=c.events_in,
        samples_out=c.samples_out,
        dead_letters=c.dead_letters,
        duplicates_skipped=c.duplicates_skipped,
        batches=c.batches,
        elapsed_s=time.monotonic() - started,
        stop_reason=worker.stop_reason,
        events_per_s=_rate(runtime),
        topic_resets=c.topic_resets,
        topic_changes=c.topic_changes,
        stale_skipped=c.stale_skipped,
        store_resets=c.store_resets,
        redis_retries=c.redis_retries,
        kafka_retries=c.kafka_retries,
        commit_failures=c.commit_failures,
        duplicates_dropped_by_id=c.duplicates_dropped_by_id,
        dedupe_unchecked=c.dedupe_unchecked,
    )


def _rate(runtime: FeaturesRuntime) -> float | None:
    c = runtime.counters
    if c.first_batch_at is None or c.last_batch_at is None or c.last_batch_at <= c.first_batch_at:
        return None
    return (c.records_seen - c.first_batch_events) / (c.last_batch_at - c.first_batch_at)
