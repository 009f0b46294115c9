"""The features worker's Prometheus endpoint (FRESHREC_FEATURES_METRICS_PORT) against a real run:
the real ingest sends criteo_tiny.tsv to the real broker, the real worker stores it in the real
Redis, and /metrics, scraped while the worker runs, counts exactly what the run did."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from infra.services import free_port
from stages.common import keys
from stages.common.settings import CommonSettings, load_settings
from stages.features.readback import read_counters
from stages.features.runner import FeaturesSummary, run_features
from stages.features.settings import FeaturesSettings
from stages.features.store import stream_bytes_key

from .conftest import wait_for

pytestmark = pytest.mark.integration


def _scrape(port: int) -> dict[str, list[Any]]:
    """family name -> its samples, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def _value(families: dict[str, list[Any]], family: str, sample: str) -> float:
    values = [s.value for s in families[family] if s.name == sample]
    assert len(values) == 1, f"{sample}: {families.get(family)}"
    return float(values[0])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_metrics_endpoint_counts_the_run(
    criteo_tiny: Path, make_settings: Callable[..., CommonSettings]
) -> None:
    from stages.ingest.run import run_ingest
    from stages.ingest.settings import IngestSettings

    common = make_settings("kafka", "redis")
    port = free_port()
    settings = load_settings(
        FeaturesSettings,
        group=f"{common.redis_namespace}-features",
        dlq_topic=f"{common.redis_namespace}.features.dlq",
        stats_interval_s=1,
        log_interval_s=2,
        batch_max=200,
        metrics_port=port,
    )
    sent = run_ingest(common, load_settings(IngestSettings, linger_ms=5), criteo_tiny,
                      progress=False)
    assert sent.sent == 1000

    stop = threading.Event()
    result: dict[str, FeaturesSummary | BaseException] = {}

    def run() -> None:
        try:
            result["summary"] = run_features(common, settings, stop=stop)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    client = redis.Redis.from_url(common.redis_url)
    try:
        def all_stored() -> bool:
            assert "error" not in result, f"the worker failed: {result.get('error')!r}"
            c = read_counters(client, common.redis_namespace)
            return c.get("events_in", 0) >= 1000

        wait_for(all_stored, 180, "all 1000 events stored")
        # The runtime counts right after the store's script returns: scrape until it shows it.
        families: dict[str, list[Any]] = {}

        def scraped_all() -> bool:
            nonlocal families
            families = _scrape(port)
            return _value(families, "freshrec_features_events_in",
                          "freshrec_features_events_in_total") >= 1000

        wait_for(scraped_all, 30, "/metrics to count 1000 events")
        assert thread.is_alive(), "the scrape must happen while the worker runs"
        stored = read_counters(client, common.redis_namespace)
        ns = common.redis_namespace
        in_stream = (int(client.get(stream_bytes_key(ns)) or 0),
                     client.xlen(keys.samples_stream(ns)))
    finally:
        stop.set()
        thread.join(120)
        client.close()
    assert not thread.is_alive(), "the features worker did not stop"
    assert "error" not in result, f"the worker failed: {result['error']!r}"
    summary = result["summary"]
    assert isinstance(summary, FeaturesSummary)

    def counter(name: str) -> float:
        return _value(families, f"freshrec_features_{name}", f"freshrec_features_{name}_total")

    events, samples, dead = counter("events_in"), counter("samples_out"), counter("dead_letters")
    print(f"scraped: events_in={events} samples_out={samples} dead_letters={dead}; "
          f"summary {summary}")
    assert events == 1000 == samples + dead + counter("duplicates_dropped_by_id")
    assert counter("duplicates_dropped_by_id") == 0
    assert (events, samples, dead) == (
        summary.events_in, summary.samples_out, summary.dead_letters
    )
    assert (samples, dead) == (stored["samples_out"], stored["dead_letters"])
    assert counter("duplicates_skipped") == summary.duplicates_skipped == 0
    for name in ("topic_resets", "store_resets", "redis_retries", "kafka_retries",
                 "commit_failures", "topic_changes", "stale_skipped", "dedupe_unchecked"):
        assert counter(name) == getattr(summary, name) == 0, name
    batches = _value(families, "freshrec_features_batches", "freshrec_features_batches")
    assert 1 <= batches <= summary.batches
    # a lag gauge per partition of the events topic, 0 once everything is stored
    lag = {s.labels["partition"]: s.value for s in families["freshrec_features_consumer_lag"]}
    assert sorted(lag) == [str(p) for p in range(common.topic_partitions)], lag
    assert all(v == 0 for v in lag.values()), lag
    # the stream's retention, store-wide, as the write script counts it (nothing trimmed)
    gauge = {name: _value(families, f"freshrec_features_{name}", f"freshrec_features_{name}")
             for name in ("stream_bytes", "stream_blocks", "stream_budget_bytes")}
    assert (gauge["stream_bytes"], gauge["stream_blocks"]) == in_stream
    assert in_stream[0] > 269 * samples and gauge["stream_budget_bytes"] == 256 << 20
    assert counter("retention_trimmed_blocks") == counter("retention_trimmed_samples") == 0
    info = [s for f in families.values() for s in f if s.name == "freshrec_features_info"]
    assert len(info) == 1 and info[0].labels["group"] == settings.group, info
    # the server went down with the worker
    assert not _port_open(port), f"127.0.0.1:{port} still open after the worker stopped"
