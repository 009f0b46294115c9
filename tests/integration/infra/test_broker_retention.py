"""The embedded broker's retention against a real Tansu: past its memory budget the broker is
restarted empty once every topic has been read to its end (records nobody has read hold it
back), its topics come back with their configs, and a reader goes on with the new incarnation
at once."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from infra.services import RunningService, free_port, start_service
from infra.services.broker_retention import MB, EmbeddedKafkaSettings
from infra.services.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

BUDGET_MB = 96


def _tansu(service: RunningService) -> psutil.Process:
    for proc in psutil.Process(service.pid).children(recursive=True):
        if proc.name() == "tansu":
            return proc
    raise AssertionError("no tansu process under the service")


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[RunningService]:
    # Its own broker: the session one is shared, and this test fills and empties topics.
    spec = KafkaBroker(
        EmbeddedKafkaSettings(memory_mb=BUDGET_MB, memory_limit_mb=0, check_interval_s=0.2)
    )
    with start_service(spec, free_port(), tmp_path / "kafka") as service:
        yield service


def _topic_id(admin: Any, topic: str) -> str:
    from confluent_kafka import TopicCollection

    return str(admin.describe_topics(TopicCollection([topic]))[topic].result(10).topic_id)


def _produce(bootstrap: str, topic: str, count: int, size: int, tag: bytes) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20})
    body = os.urandom(size)
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=tag + b"%d" % i, value=body)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0


def _commit_end(bootstrap: str, topic: str, group: str) -> None:
    """`group` reads `topic` to its end and commits (the reader of a dead-letter topic)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 8.0:  # Tansu answers the first join after 3 s
        got = [m for m in consumer.consume(10_000, 0.5) if not m.error()]
        if got:
            consumer.commit(asynchronous=False)
            quiet_since = time.monotonic()
    consumer.close()


def test_past_the_budget_the_broker_is_rolled_once_all_is_read(
    broker: RunningService,
) -> None:
    from aiokafka import AIOKafkaConsumer
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    bootstrap = broker.url
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    read, unread = "events", "dead-letters"
    config = {"retention.ms": "86400000", "retention.bytes": "1073741824"}
    for future in admin.create_topics(
        [NewTopic(read, 2, 1, config=config), NewTopic(unread, 1, 1)]
    ).values():
        future.result(10)
    first_id = _topic_id(admin, read)
    _produce(bootstrap, unread, 2_000, 1_000, b"u")
    _produce(bootstrap, read, 120_000, 1_000, b"a")  # ~120 MB: past the budget

    async def read_all() -> tuple[int, int, float, bool]:
        consumer = AIOKafkaConsumer(
            read, bootstrap_servers=bootstrap, group_id="features", enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=2000,
        )
        await consumer.start()
        old = new = 0
        rolled_at = 0.0
        held_back = False
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                fetch = await consumer.getmany(timeout_ms=200, max_records=20_000)
                for tp, records in fetch.items():
                    for record in records:
                        if record.key.startswith(b"b"):
                            new += 1
                        else:
                            old += 1
                    await consumer.commit({tp: records[-1].offset + 1})
                if old == 120_000 and not held_back:
                    # All of `read` is read, but nobody has read `unread`: no roll.
                    await asyncio.sleep(5)
                    held_back = _topic_id(admin, read) == first_id
                    await asyncio.to_thread(_commit_end, bootstrap, unread, "dlq-reader")
                if not rolled_at and held_back and _topic_id(admin, read) != first_id:
                    rolled_at = time.monotonic()
                    # Written after the roll: the reader must get them at once.
                    await asyncio.to_thread(_produce, bootstrap, read, 1_000, 100, b"b")
                if new >= 1_000:
                    return old, new, time.monotonic() - rolled_at, held_back
        finally:
            await consumer.stop()
        return old, new, -1.0, held_back

    old, new, caught_up_s, held_back = asyncio.run(read_all())

    assert old == 120_000
    assert held_back, "rolled although a topic with records had no reader"
    assert new == 1_000, "the reader did not get the records written after the roll"
    assert 0 <= caught_up_s < 20
    assert _tansu(broker).memory_info().rss < BUDGET_MB * MB
    described = admin.describe_configs([ConfigResource("TOPIC", read)])
    entries = next(iter(described.values())).result(10)
    assert {k: entries[k].value for k in config} == config
    assert unread in admin.list_topics(timeout=10).topics
    assert "restarted it empty" in broker.log_path.read_text()
