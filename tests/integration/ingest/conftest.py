"""Helpers of the ingest integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def _read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[tuple[bytes, bytes]]:
    """Every record of `topic` (all partitions, from the beginning up to the current end)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{topic}", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        todo = {p for p, end in ends.items() if end > 0}
        records: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                if msg.error():
                    raise AssertionError(f"consumer error: {msg.error()}")
                records.append((msg.key() or b"", msg.value() or b""))
                if (msg.offset() or 0) + 1 >= ends[msg.partition()]:
                    todo.discard(msg.partition())
        assert not todo, f"timed out reading {topic}: partitions {sorted(todo)} unfinished"
        return records
    finally:
        consumer.close()


@pytest.fixture
def read_topic() -> Callable[[str, str], list[tuple[bytes, bytes]]]:
    """read_topic(bootstrap, topic) -> every (key, value) of the topic, from the beginning."""
    return _read_topic
