"""Prometheus metrics of `freshrec serve` (GET /metrics, the text exposition format).

One `ServingMetrics` per app, on its own `CollectorRegistry` (nothing global, nothing at import
time, so two apps in one process do not share counts). Series:

    freshrec_serve_requests_total{endpoint, status}      counter, every answered request
    freshrec_serve_request_duration_seconds{endpoint}    histogram, time in the app per request
    freshrec_serve_rows_total{endpoint}                  counter, rows scored
    freshrec_serve_model_version{model, alias}           gauge, the registry version served
                                                         (absent before the first model)
    freshrec_serve_model_staleness_seconds{model, alias} gauge, seconds since that version was
                                                         registered (absent when unknown)
    freshrec_serve_model_swaps_total                     counter, versions swapped in
    freshrec_serve_swap_failures_total{reason}           counter, "refused" (a corrupt or
                                                         non-finite version) or "error" (MLflow
                                                         unreachable, a failed download)

The model series are read from the follower at scrape time, so they are never stale.

Several worker processes (`freshrec serve --workers N`) run with PROMETHEUS_MULTIPROC_DIR set
(`serve_main`): the request, duration and row series are then prometheus_client's
multiprocess values, summed over the workers in every answer whoever answers; the model
series are those of the process that answers (each follows the alias itself).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own
# Serving answers 1-row requests in about a millisecond and 1,000-row ones in about ten.
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class FollowerView(Protocol):
    """What the metrics read of `serving.ModelFollower`."""

    alias: str
    swaps: int
    swap_failures: dict[str, int]

    @property
    def model_name(self) -> str: ...

    def served(self) -> tuple[str, float | None] | None:
        """(version, staleness in seconds or None), or None before the first model."""


class _ModelCollector(Collector):
    def __init__(self, follower: FollowerView) -> None:
        self.follower = follower

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        f = self.follower
        labels = ["model", "alias"]
        version = GaugeMetricFamily("freshrec_serve_model_version",
                                    "Registry version being served.", labels=labels)
        staleness = GaugeMetricFamily(
            "freshrec_serve_model_staleness_seconds",
            "Seconds since the served version was registered.", labels=labels)
        served = f.served()
        if served is not None:
            number, age = served
            if number.isdigit():
                version.add_metric([f.model_name, f.alias], float(number))
            if age is not None:
                staleness.add_metric([f.model_name, f.alias], age)
        yield version
        yield staleness
        yield CounterMetricFamily("freshrec_serve_model_swaps",
                                  "Model versions swapped in.", value=f.swaps)
        failures = CounterMetricFamily("freshrec_serve_swap_failures",
                                       "Versions that could not be swapped in.",
                                       labels=["reason"])
        for reason in ("refused", "error"):
            failures.add_metric([reason], f.swap_failures.get(reason, 0))
        yield failures


class ServingMetrics:
    """The request and model metrics of one serving app."""

    def __init__(self, follower: FollowerView) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("freshrec_serve_requests", "Requests answered.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("freshrec_serve_request_duration_seconds",
                                 "Seconds from the request to its answer, in the app.",
                                 ["endpoint"], buckets=_BUCKETS, registry=self.registry)
        self.rows = Counter("freshrec_serve_rows", "Rows scored.", ["endpoint"],
                            registry=self.registry)
        model = _ModelCollector(follower)
        self.registry.register(model)
        self.exposed = self.registry
        shared = os.environ.get(MULTIPROCESS_ENV)
        if shared:  # the workers' request series, summed, and this process's model series
            self.exposed = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self.exposed, path=shared)
            self.exposed.register(model)
        self._series: dict[tuple[str, int], tuple[Any, Any, Any]] = {}

    def observe(self, endpoint: str, status: int, seconds: float, rows: int = 0) -> None:
        """Count one answered request (and the rows it scored)."""
        series = self._series.get((endpoint, status))
        if series is None:  # `labels()` costs ~3 us a call: looked up once per label pair
            series = self._series[(endpoint, status)] = (
                self.requests.labels(endpoint, str(status)), self.latency.labels(endpoint),
                self.rows.labels(endpoint))
        count, latency, scored = series
        count.inc()
        latency.observe(seconds)
        if rows:
            scored.inc(rows)

    def exposition(self) -> bytes:
        """The Prometheus text format of every series."""
        return generate_latest(self.exposed)
