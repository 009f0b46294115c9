"""Helpers for the features integration tests, on the shared session services.

The broker and redis-server come from tests/integration/conftest.py (`kafka_broker`,
`redis_server`); each test isolates itself with its own topic, group and Redis namespace.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Services:
    kafka: str  # HOST:PORT
    redis: str  # redis://...


@pytest.fixture()
def services(kafka_broker: str, redis_server: str) -> Services:
    return Services(kafka_broker, redis_server)


@pytest.fixture()
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def criteo_rows(criteo_sample: Path) -> list[bytes]:
    """The rows of the shared Criteo 10k sample (skips when the file is absent)."""
    with gzip.open(criteo_sample) as f:
        return [line.rstrip(b"\n") for line in f]


def create_topic(bootstrap: str, topic: str, partitions: int = 4) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    """Produce (key, value) pairs and wait until the broker has them all."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": False}
    )
    for key, value in values:
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("producer did not flush in 60 s")


def worker_env(services: Services, unique: str, tmp: Path, **features: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env.update(
        FRESHREC_KAFKA_BOOTSTRAP=services.kafka,
        FRESHREC_REDIS_URL=services.redis,
        FRESHREC_REDIS_NAMESPACE=f"t{unique}",
        FRESHREC_TOPIC_EVENTS=f"events.{unique}",
        FRESHREC_STATE_DIR=str(tmp),
        FRESHREC_FEATURES_GROUP=f"g{unique}",
        FRESHREC_FEATURES_DLQ_TOPIC=f"dlq.{unique}",
        FRESHREC_FEATURES_LOG_INTERVAL_S="2",
        FRESHREC_FEATURES_STATS_INTERVAL_S="1",
    )
    env.update({f"FRESHREC_FEATURES_{k.upper()}": v for k, v in features.items()})
    return env


def start_worker(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`freshrec features ARGS` as a subprocess; stdout+stderr go to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "features", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
