"""The trainer's Prometheus metrics on an opt-in loopback port (`FRESHREC_TRAIN_METRICS_PORT`).

Rank 0 only. The series live in their own registry (not prometheus_client's global one), so
two trainers in one process, or a test, never share counters. Values the trainer updates per
window are set by `observe_window` and friends (a few dict updates, no I/O); the tracking
outbox's state is read when Prometheus scrapes, from the outbox's own thread-safe counters.
The HTTP server runs in prometheus_client's daemon thread: a slow scrape never holds training.

Series (prefix `freshrec_trainer_`): `samples_total`, `windows_total`, `admissions_total`,
`evictions_total`, `store_resets_total`, `exports_total`, `exports_skipped_total`,
`exports_refused_total`, `tracking_failures_total`, `tracking_dropped_total` (counters,
since this process started); `samples_per_second`, `window_auc`, `window_logloss`, `window`,
`last_window_timestamp_seconds`, `table_size`, `backlog_blocks` (store source only),
`tracking_backlog`, `tracking_pending_exports` (gauges); `info` (model, consumer, source).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from stages.common.errors import TrainError, require
from stages.common.metrics_http import MetricsEndpoint
from stages.train.core.report import WindowReport

if TYPE_CHECKING:
    from stages.train.outbox import TrackingOutbox

PREFIX = "freshrec_trainer"


class TrainerMetrics:
    """The trainer's series in a private registry. `serve(port)` exposes them; `close()`."""

    def __init__(self, info: dict[str, str]) -> None:
        prom: Any = require("prometheus_client", "train")
        self.registry = prom.CollectorRegistry()
        self._endpoint = MetricsEndpoint(self.registry, "trainer", "FRESHREC_TRAIN_METRICS_PORT",
                                         TrainError, "train")
        self._outbox: TrackingOutbox | None = None
        reg = self.registry

        def counter(name: str, doc: str) -> Any:
            return prom.Counter(f"{PREFIX}_{name}", doc, registry=reg)

        def gauge(name: str, doc: str) -> Any:
            return prom.Gauge(f"{PREFIX}_{name}", doc, registry=reg)

        self.samples = counter("samples", "Samples trained (all ranks).")
        self.windows = counter("windows", "Windows trained.")
        self.admissions = counter("admissions", "Ids admitted into the embedding table.")
        self.evictions = counter("evictions", "Ids evicted from the embedding table.")
        self.store_resets = counter("store_resets", "Feature-store resets noticed.")
        self.exports = counter("exports", "Model exports queued for MLflow.")
        self.exports_skipped = counter(
            "exports_skipped", "Exports skipped while too many waited for MLflow.")
        self.exports_refused = counter(
            "exports_refused", "Exports refused for non-finite weights (not uploaded).")
        self.samples_per_second = gauge("samples_per_second", "Samples/s of the last window.")
        self.auc = gauge("window_auc", "Progressive AUC of the last window (nan: undefined).")
        self.logloss = gauge("window_logloss", "Progressive logloss of the last window.")
        self.window = gauge("window", "Number of the last window trained (continues "
                            "across restarts).")
        self.last_window_at = gauge("last_window_timestamp_seconds",
                                    "Unix time the last window finished training.")
        self.table_size = gauge("table_size", "Admitted ids over all shards.")
        self.backlog: Any = None
        self._info = prom.Info(PREFIX, "What this trainer is.", registry=reg)
        self._info.info(info)
        reg.register(_OutboxCollector(self))

    def serve(self, port: int) -> None:
        """Serve `/metrics` on 127.0.0.1:`port`; TrainError when the port is taken."""
        self._endpoint.serve(port)

    def close(self) -> None:
        self._endpoint.close()

    def watch_outbox(self, outbox: TrackingOutbox | None) -> None:
        """Report this outbox's backlog and failures at each scrape."""
        self._outbox = outbox

    def track_backlog(self, blocks: Callable[[], float]) -> None:
        """Add `backlog_blocks`, read from `blocks()` at each scrape (only a store source has a
        backlog). nan when `blocks()` fails (the store does not answer): the scrape still works.
        """
        prom: Any = require("prometheus_client", "train")

        def read() -> float:
            try:
                return blocks()
            except Exception:  # noqa: BLE001 - reported as nan, the trainer itself logs outages
                return float("nan")

        self.backlog = prom.Gauge(
            f"{PREFIX}_backlog_blocks", "Sample blocks in the store not trained yet (the "
            "store's last block seq minus the trainer's).", registry=self.registry)
        self.backlog.set_function(read)

    def observe_window(self, report: WindowReport, admitted: int) -> None:
        """Count one trained window; `admitted`: ids admitted while training it."""
        self.samples.inc(report.metrics.samples)
        self.windows.inc()
        self.admissions.inc(max(admitted, 0))
        self.evictions.inc(report.evicted)
        self.samples_per_second.set(report.samples_per_second)
        self.auc.set(report.metrics.auc)
        self.logloss.set(report.metrics.logloss)
        self.window.set(report.window)
        self.table_size.set(report.table_size)
        self.last_window_at.set(time.time())


class _OutboxCollector:
    """The tracking outbox's state, read at scrape time."""

    def __init__(self, metrics: TrainerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        core: Any = require("prometheus_client.core", "train")
        outbox = self._metrics._outbox
        backlog = outbox.backlog() if outbox is not None else 0
        pending = outbox.pending_exports() if outbox is not None else 0
        failures = outbox.failures if outbox is not None else 0
        dropped = outbox.dropped if outbox is not None else 0
        yield core.GaugeMetricFamily(f"{PREFIX}_tracking_backlog",
                                     "Tracking records (metrics, tags, exports, inputs, plots) "
                                     "waiting for MLflow.", value=backlog)
        yield core.GaugeMetricFamily(f"{PREFIX}_tracking_pending_exports",
                                     "Model exports waiting for MLflow.", value=pending)
        yield core.CounterMetricFamily(f"{PREFIX}_tracking_failures",
                                       "Failed MLflow requests of the trainer.", value=failures)
        yield core.CounterMetricFamily(f"{PREFIX}_tracking_dropped",
                                       "Tracking records given up (queue full or refused).",
                                       value=dropped)
