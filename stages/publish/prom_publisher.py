"""The publisher's Prometheus metrics on an opt-in loopback port (`FRESHREC_PUBLISH_METRICS_PORT`).

Served while `run_publisher` loops (not for a single `once` cycle). The series live in their
own registry (not prometheus_client's global one), so two publishers in one process, or a test,
never share them. Nothing is counted twice: every value is read at scrape time from the
`PublishSummary` of the running `run_publisher` call and from the `Publisher` (plain ints and
list lengths, no MLflow request), so the counters always equal the summary. The HTTP server runs
in prometheus_client's daemon thread.

Series (prefix `freshrec_publish_`): `versions_total{kind}`, `promotions_total`,
`gate_refusals_total`, `exports_folded_total`, `exports_refused_total`, `failed_cycles_total`,
`versions_deleted_total`, `trainer_exports_deleted_total`, `retention_failures_total`
(counters, since this publisher started); `last_version`, `production_version` (as the
publisher last saw the alias), `seconds_since_last_publish` (gauges; NaN while unknown).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from stages.common.errors import PublishError, require
from stages.common.metrics_http import MetricsEndpoint

if TYPE_CHECKING:
    from stages.publish.publisher import Publisher, PublishSummary

PREFIX = "freshrec_publish"
NAN = float("nan")


class PublisherMetrics:
    """A private registry over one publisher's summary. `serve(port)` exposes it; `close()`."""

    def __init__(self, summary: PublishSummary, publisher: Publisher) -> None:
        prom: Any = require("prometheus_client", "publish")
        self.registry = prom.CollectorRegistry()
        self._endpoint = MetricsEndpoint(self.registry, "publisher",
                                         "FRESHREC_PUBLISH_METRICS_PORT", PublishError, "publish")
        self.registry.register(_PublisherCollector(summary, publisher))

    def serve(self, port: int) -> None:
        """Serve `/metrics` on 127.0.0.1:`port`; PublishError when the port is taken."""
        self._endpoint.serve(port)

    def close(self) -> None:
        self._endpoint.close()


class _PublisherCollector:
    """The summary's counts and the publisher's state, read at scrape time."""

    def __init__(self, summary: PublishSummary, publisher: Publisher) -> None:
        self._summary = summary
        self._publisher = publisher

    def collect(self) -> Iterator[Any]:
        core: Any = require("prometheus_client.core", "publish")
        s, p = self._summary, self._publisher
        kinds = list(s.version_kinds)
        versions = core.CounterMetricFamily(
            f"{PREFIX}_versions", "Model versions registered (or adopted) by this publisher.",
            labels=["kind"])
        for kind in ("full", "delta"):
            versions.add_metric([kind], kinds.count(kind))
        yield versions

        def counter(name: str, doc: str, value: int) -> Any:
            return core.CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield counter("promotions", "Versions `production` moved to (quality gate passed).",
                      len(s.promoted))
        yield counter("gate_refusals", "Versions the quality gate kept out of production.",
                      s.gate_refusals)
        yield counter("exports_folded", "Trainer exports folded into versions.",
                      s.exports_folded)
        yield counter("exports_refused", "Trainer exports refused for non-finite weights "
                      "(never published).", s.refused_exports)
        yield counter("failed_cycles", "Publish cycles that failed (MLflow away, a corrupt "
                      "export); retried.", s.failed_cycles)
        yield counter("versions_deleted", "Registry versions deleted by retention.",
                      s.versions_deleted)
        yield counter("trainer_exports_deleted", "Folded trainer exports deleted by retention.",
                      s.exports_deleted)
        yield counter("retention_failures", "Retention rounds that failed (retried).",
                      s.retention_failures)

        last = p.last
        published = p.last_published_s
        production = p.production
        yield core.GaugeMetricFamily(
            f"{PREFIX}_last_version", "The newest registered version (NaN: none yet).",
            value=NAN if last is None else last.version)
        yield core.GaugeMetricFamily(
            f"{PREFIX}_production_version",
            "The version under the `production` alias, as the publisher last saw it (NaN: none).",
            value=NAN if production is None else production)
        yield core.GaugeMetricFamily(
            f"{PREFIX}_seconds_since_last_publish",
            "Seconds since the newest version was registered (NaN: none yet).",
            value=NAN if published is None else max(time.time() - published, 0.0))
