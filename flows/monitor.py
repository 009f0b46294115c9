"""Read-only probes of the pipeline's progress, for the demo's live view and its summary.

Each probe asks one service and never raises: a service that does not answer yet shows as None.
"""

from __future__ import annotations

import logging
import urllib.error
from dataclasses import dataclass
from typing import Any

from stages.common import keys
from stages.common.model_export import TAG_ROLE
from stages.common.settings import CommonSettings, kafka_client_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """One look at the pipeline. None = not known (yet)."""

    events_in_topic: int | None
    ingest_dead_letters: int | None
    store_counters: dict[str, int]
    windows: int | None
    progressive_auc: float | None
    table_size: int | None
    versions: int | None
    latest_version: int | None
    production_version: int | None


def topic_size(common: CommonSettings, topic: str) -> int | None:
    """Records in `topic` (sum of high watermarks; topics are never compacted here)."""
    try:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({**kafka_client_config(common), "group.id": "freshrec-monitor"})
        try:
            meta = consumer.list_topics(topic, timeout=3)
            parts = meta.topics[topic].partitions if topic in meta.topics else {}
            total = 0
            for p in parts:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=3)
                total += high
            return total
        finally:
            consumer.close()
    except Exception as exc:  # a probe must not stop the demo; say why it is blank
        log.debug("kafka probe failed: %s", exc)
        return None


def store_counters(common: CommonSettings) -> dict[str, int]:
    """The feature store's counters hash (events_in, samples_out, dead_letters, ...)."""
    try:
        import redis

        password = common.redis_password.get_secret_value() if common.redis_password else None
        client = redis.Redis.from_url(common.redis_url, password=password, socket_timeout=3)
        try:
            raw = client.hgetall(keys.counters(common.redis_namespace))
        finally:
            client.close()
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    except Exception as exc:
        log.debug("redis probe failed: %s", exc)
        return {}


def _mlflow_client(common: CommonSettings) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=common.mlflow_tracking_uri, registry_uri=common.mlflow_tracking_uri)


def trainer_metrics(common: CommonSettings) -> dict[str, float]:
    """The latest metrics of the newest trainer run (empty when there is none)."""
    try:
        client = _mlflow_client(common)
        exp = client.get_experiment_by_name(common.mlflow_experiment)
        if exp is None:
            return {}
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{TAG_ROLE}` = 'trainer'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            return {}
        metrics = dict(runs[0].data.metrics)
        history = client.get_metric_history(runs[0].info.run_id, "samples")
        if history:
            metrics["window"] = float(max(m.step for m in history))
        return metrics
    except Exception as exc:
        log.debug("mlflow probe failed: %s", exc)
        return {}


def registry_state(common: CommonSettings) -> tuple[int | None, int | None, int | None]:
    """(number of versions, the newest version, version under `production`).

    MLflow reserves the alias name `latest`: it means the newest version (as in serving).
    """
    try:
        client = _mlflow_client(common)
        versions = client.search_model_versions(f"name = '{common.model_name}'")
        model = client.get_registered_model(common.model_name)
        aliases = {k: int(v) for k, v in (model.aliases or {}).items()}
        newest = max((int(v.version) for v in versions), default=None)
        return len(versions), newest, aliases.get("production")
    except Exception as exc:
        log.debug("registry probe failed: %s", exc)
        return None, None, None


def _first(metrics: dict[str, float], *names: str) -> float | None:
    for name in names:
        if name in metrics:
            return metrics[name]
    return None


def mlflow_answers(common: CommonSettings, timeout_s: float = 2.0) -> bool:
    """True when the tracking server answers its health check within `timeout_s` (MLflow's
    own client would retry a dead server for minutes). Local stores always answer."""
    uri = common.mlflow_tracking_uri
    if not uri.startswith(("http://", "https://")):
        return True
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    try:
        with urllib.request.urlopen(bare.rstrip("/") + "/health", timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False


def look(common: CommonSettings) -> Progress:
    """Probe every service once (MLflow only when it answers at once)."""
    if mlflow_answers(common):
        metrics = trainer_metrics(common)
        count, latest, production = registry_state(common)
    else:
        metrics, (count, latest, production) = {}, (None, None, None)
    windows = _first(metrics, "window", "windows")
    table = _first(metrics, "table_size")
    return Progress(
        events_in_topic=topic_size(common, common.topic_events),
        ingest_dead_letters=topic_size(common, common.topic_events_dlq),
        store_counters=store_counters(common),
        windows=int(windows) if windows is not None else None,
        progressive_auc=_first(metrics, "auc", "progressive_auc"),
        table_size=int(table) if table is not None else None,
        versions=count,
        latest_version=latest,
        production_version=production,
    )
