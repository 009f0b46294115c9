"""The features worker's Prometheus metrics on an opt-in loopback port
(`FRESHREC_FEATURES_METRICS_PORT`).

The series live in their own registry (not prometheus_client's global one), so two workers in
one process, or a test, never share series. Nothing is counted twice: every value is read from
the worker's `FeaturesRuntime` when Prometheus scrapes (a custom collector), so the hot path
does no extra work. The HTTP server runs in prometheus_client's daemon threads: a slow scrape
never holds the event loop.

Consumer lag per partition: for each partition this worker has stored (the runtime's next
offsets), the broker's high watermark minus the next offset to store, asked at scrape time by a
client of the scrape's own (librdkafka; a few ms per partition). NaN when the broker does not
answer within `LAG_TIMEOUT_S`. The worker's own total (`runtime.lag_probe()`, the consumer's
high waters over its assigned partitions, as in the progress line) is `consumer_lag_total`.

Series (prefix `freshrec_features_`): `events_in_total`, `samples_out_total`,
`dead_letters_total`, `duplicates_skipped_total`, `duplicates_dropped_by_id_total`,
`dedupe_unchecked_total`, `stale_skipped_total`, `topic_resets_total`, `topic_changes_total`,
`store_resets_total`, `redis_retries_total`, `kafka_retries_total`, `commit_failures_total`
(counters, since this worker started); `batches`, `consumer_lag{partition}`,
`consumer_lag_total`, `idle_seconds` (gauges); `info` (group, topic, consumer).

The sample stream's retention, store-wide (all workers of the namespace), read from Redis at
scrape time (NaN when Redis does not answer within `STORE_TIMEOUT_S`): `stream_bytes` and
`stream_blocks` (what the stream holds, as the write script counts it), `stream_budget_bytes`
(this worker's `retention_mb`), `retention_trimmed_blocks_total` and
`retention_trimmed_samples_total` (blocks and samples the retention dropped since the store
began, read or not).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from typing import Any

from stages.common import keys
from stages.common.errors import FeaturesError, require
from stages.common.metrics_http import MetricsEndpoint
from stages.common.settings import CommonSettings, kafka_client_config
from stages.features.pipeline import FeaturesRuntime
from stages.features.settings import FeaturesSettings
from stages.features.store import stream_bytes_key, stream_index_key

log = logging.getLogger("freshrec.features")

PREFIX = "freshrec_features"
#: How long one scrape waits for the broker's high watermark of one partition.
LAG_TIMEOUT_S = 2.0
#: How long one scrape waits for Redis (the stream's retention series).
STORE_TIMEOUT_S = 2.0

#: (counter attribute of RunCounters, series name without prefix and `_total`, help)
_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("events_in", "events_in", "Events (Kafka records) consumed and processed."),
    ("samples_out", "samples_out", "Samples stored in the Redis feature store."),
    ("dead_letters", "dead_letters", "Events sent to the dead-letter topic."),
    ("duplicates_skipped", "duplicates_skipped",
     "Replayed offsets already stored (skipped by the store script)."),
    ("duplicates_dropped_by_id", "duplicates_dropped_by_id",
     "Re-sent events (an event id already stored, at a new offset), not stored."),
    ("dedupe_unchecked", "dedupe_unchecked",
     "Samples stored without the event-id check (older than the id window)."),
    ("stale_skipped", "stale_skipped", "Events of a retired topic incarnation, not stored."),
    ("topic_resets", "topic_resets",
     "Writes that found a recreated events topic and reset its watermarks."),
    ("topic_changes", "topic_changes",
     "Fetches dropped because the topic was recreated under the consumer."),
    ("store_resets", "store_resets", "Store epoch changes noticed (Redis came back empty)."),
    ("redis_retries", "redis_retries", "Redis calls retried during outages."),
    ("kafka_retries", "kafka_retries", "Topic id requests retried during broker outages."),
    ("commit_failures", "commit_failures", "Kafka offset commits that failed (a replay follows)."),
)


class FeaturesMetrics:
    """The worker's series in a private registry, read from `runtime` at each scrape.
    `serve(port)` exposes them on 127.0.0.1; `close()` stops the server."""

    def __init__(
        self, common: CommonSettings, settings: FeaturesSettings, runtime: FeaturesRuntime
    ) -> None:
        prom: Any = require("prometheus_client", "features")
        self.registry = prom.CollectorRegistry()
        self._endpoint = MetricsEndpoint(self.registry, "features",
                                         "FRESHREC_FEATURES_METRICS_PORT", FeaturesError,
                                         "features")
        self._watermarks = _Watermarks(common, settings.group)
        info = prom.Info(PREFIX, "What this features worker is.", registry=self.registry)
        info.info({"group": settings.group, "topic": common.topic_events,
                   "consumer": settings.consumer})
        self.registry.register(_RuntimeCollector(runtime, common.topic_events, self._watermarks))
        self._retention = _Retention(common, settings.retention_mb << 20)
        self.registry.register(self._retention)

    def serve(self, port: int) -> None:
        """Serve `/metrics` on 127.0.0.1:`port`; FeaturesError when the port is taken."""
        try:
            self._endpoint.serve(port)
        except FeaturesError:
            self._watermarks.close()
            self._retention.close()
            raise
        log.info("features: Prometheus metrics on http://127.0.0.1:%d/metrics", port)

    def close(self) -> None:
        """Stop the server (idempotent): the port is closed when this returns."""
        self._endpoint.close()
        self._watermarks.close()
        self._retention.close()


class _Watermarks:
    """High watermarks of the events topic, asked at scrape time (lazily made librdkafka
    consumer that never joins a group; one scrape at a time uses it)."""

    def __init__(self, common: CommonSettings, group: str) -> None:
        self._common = common
        self._group = group
        self._lock = threading.Lock()
        self._client: Any = None

    def high(self, topic: str, partition: int) -> int | None:
        with self._lock:
            try:
                kafka: Any = require("confluent_kafka", "features")
                if self._client is None:
                    conf: dict[str, Any] = kafka_client_config(self._common)
                    conf.update({"group.id": f"{self._group}-metrics", "log_level": 0,
                                 "enable.auto.commit": False})
                    self._client = kafka.Consumer(conf)
                _, high = self._client.get_watermark_offsets(
                    kafka.TopicPartition(topic, partition), timeout=LAG_TIMEOUT_S, cached=False
                )
                return int(high) if high is not None and high >= 0 else None
            except Exception as exc:  # noqa: BLE001 - reported as nan; the worker logs outages
                log.debug("high watermark of %s:%d unknown: %r", topic, partition, exc)
                return None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception as exc:  # noqa: BLE001 - closing a read-only client
                    log.debug("closing the metrics Kafka client: %r", exc)
                self._client = None


class _Retention:
    """The sample stream's retention series, read from Redis at scrape time (a lazily made
    synchronous client of its own; one scrape at a time uses it)."""

    def __init__(self, common: CommonSettings, budget: int) -> None:
        self._common = common
        self._budget = budget
        self._lock = threading.Lock()
        self._client: Any = None

    def _read(self) -> list[float]:
        """[bytes, blocks, trimmed blocks, trimmed samples]; NaNs when Redis does not answer."""
        ns = self._common.redis_namespace
        with self._lock:
            try:
                if self._client is None:
                    redis: Any = require("redis", "features")
                    secret = self._common.redis_password
                    self._client = redis.Redis.from_url(
                        self._common.redis_url,
                        password=secret.get_secret_value() if secret else None,
                        socket_timeout=STORE_TIMEOUT_S,
                        socket_connect_timeout=STORE_TIMEOUT_S,
                    )
                pipe = self._client.pipeline(transaction=False)
                pipe.get(stream_bytes_key(ns))
                pipe.llen(stream_index_key(ns))
                pipe.hmget(keys.counters(ns), "retention_trimmed_blocks",
                           "retention_trimmed_samples")
                size, blocks, (trimmed, rows) = pipe.execute()
                return [float(v or 0) for v in (size, blocks, trimmed, rows)]
            except Exception as exc:  # noqa: BLE001 - reported as nan; the worker logs outages
                log.debug("stream retention unknown: %r", exc)
                return [math.nan] * 4

    def collect(self) -> Iterator[Any]:
        core: Any = require("prometheus_client.core", "features")
        size, blocks, trimmed, rows = self._read()
        yield core.GaugeMetricFamily(
            f"{PREFIX}_stream_bytes", "Bytes of sample blocks in the Redis stream (their "
            "field values, as the retention counts them; all workers).", value=size)
        yield core.GaugeMetricFamily(f"{PREFIX}_stream_blocks",
                                     "Sample blocks in the Redis stream (all workers).",
                                     value=blocks)
        yield core.GaugeMetricFamily(f"{PREFIX}_stream_budget_bytes",
                                     "The stream's byte bound (FRESHREC_FEATURES_RETENTION_MB).",
                                     value=self._budget)
        yield core.CounterMetricFamily(
            f"{PREFIX}_retention_trimmed_blocks", "Oldest sample blocks the retention dropped "
            "from the stream since the store began (all workers).", value=trimmed)
        yield core.CounterMetricFamily(
            f"{PREFIX}_retention_trimmed_samples", "Samples in the blocks the retention "
            "dropped since the store began (all workers).", value=rows)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class _RuntimeCollector:
    """The runtime's counters and lag, read at scrape time (from the server's thread: plain
    int reads and a copy of the next-offset dict, no locks taken on the event loop)."""

    def __init__(self, runtime: FeaturesRuntime, topic: str, watermarks: _Watermarks) -> None:
        self._runtime = runtime
        self._topic = topic
        self._watermarks = watermarks

    def collect(self) -> Iterator[Any]:
        core: Any = require("prometheus_client.core", "features")
        runtime = self._runtime
        c = runtime.counters
        for attr, name, doc in _COUNTERS:
            yield core.CounterMetricFamily(f"{PREFIX}_{name}", doc, value=getattr(c, attr))
        yield core.GaugeMetricFamily(f"{PREFIX}_batches",
                                     "Micro-batches processed since this worker started.",
                                     value=c.batches)
        yield core.GaugeMetricFamily(f"{PREFIX}_idle_seconds",
                                     "Seconds since the last micro-batch or assignment.",
                                     value=runtime.idle_s())
        lag = core.GaugeMetricFamily(
            f"{PREFIX}_consumer_lag",
            "Events of the partition not stored yet: broker high watermark minus this "
            "worker's next offset (nan: the broker did not answer).",
            labels=["partition"],
        )
        for partition, done in sorted(_copy(c.next_offset).items()):
            high = self._watermarks.high(self._topic, partition)
            value = math.nan if high is None else float(max(0, high - done))
            lag.add_metric([str(partition)], value)
        yield lag
        total = _probe(runtime)
        yield core.GaugeMetricFamily(
            f"{PREFIX}_consumer_lag_total",
            "Events in the assigned partitions not stored yet, from the consumer's own high "
            "waters (as in the progress line; nan: unknown yet).",
            value=math.nan if total is None else float(total),
        )


def _copy(offsets: dict[int, int]) -> dict[int, int]:
    """A copy of a dict the event loop may grow meanwhile (retried on a concurrent change)."""
    for _ in range(5):
        try:
            return dict(offsets)
        except RuntimeError:
            continue
    return {}


def _probe(runtime: FeaturesRuntime) -> int | None:
    try:
        return runtime.lag_probe()
    except Exception as exc:  # noqa: BLE001 - the probe is best effort
        log.debug("lag unknown: %r", exc)
        return None
