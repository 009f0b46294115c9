"""Issue #12, "nothing lost": records acknowledged to ingest and then lost with the embedded
broker (restarted empty: SIGKILL, a fresh Tansu, the topics created again) are sent again by
ingest (its resend ring, on the topic id's change) and stored exactly once by the features
worker (event ids stored before the reset are dropped: the event-id state survives it).

Real processes: Tansu (our own, restarted), redis-server, the real ingest and features worker.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from infra.services import RunningService, free_port, start_service
from infra.services.broker_retention import EmbeddedKafkaSettings
from infra.services.kafka_broker import KafkaBroker
from stages.common.settings import CommonSettings, load_settings
from stages.features.readback import read_blocks, read_counters
from stages.features.runner import run_features
from stages.features.settings import FeaturesSettings
from stages.ingest.core.pacing import IngestSummary
from stages.ingest.run import run_ingest
from stages.ingest.settings import IngestSettings

pytestmark = pytest.mark.integration

SENT = 800_000  # 40 s at 20,000 events/s; half of it holds ~150 MB on the 96 MB broker


class Broker:
    """Our own embedded broker on a fixed port, restartable (the session one is shared)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self._dir = directory
        self._runs = 0
        self.service = self._start()

    def _start(self) -> RunningService:
        self._runs += 1
        spec = KafkaBroker(EmbeddedKafkaSettings(memory_mb=4096, memory_limit_mb=0))
        return start_service(spec, self.port, self._dir / f"kafka-{self._runs}")

    @property
    def url(self) -> str:
        return self.service.url

    def restart_empty(self, topics: list[str], partitions: int) -> None:
        """SIGKILL Tansu (its records are gone), start a fresh one, create `topics` again."""
        for proc in psutil.Process(self.service.pid).children(recursive=True):
            if proc.name() == "tansu":
                proc.kill()
        self.service.stop()
        self.service = self._start()
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.url, "log_level": 0})
        for future in admin.create_topics([NewTopic(t, partitions, 1) for t in topics]).values():
            future.result(15)


class PipedIngest:
    """`run_ingest` in a thread, reading the lines the test writes to `sink`."""

    def __init__(self, common: CommonSettings, settings: IngestSettings, **options: Any) -> None:
        read_fd, write_fd = os.pipe()
        source = os.fdopen(read_fd, "rb")
        self.sink = os.fdopen(write_fd, "wb")
        self._result: dict[str, Any] = {}

        def ingest() -> None:
            try:
                self._result["summary"] = run_ingest(common, settings, source, progress=False,
                                                     **options)
            except BaseException as exc:  # re-raised by `finish`
                self._result["error"] = exc

        self._thread = threading.Thread(target=ingest, daemon=True)
        self._thread.start()

    def finish(self, timeout_s: float) -> IngestSummary:
        """Close the sink, wait for ingest to end: its summary (its error raised)."""
        self.sink.close()
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "ingest did not end"
        if "error" in self._result:
            raise self._result["error"]
        summary: IngestSummary = self._result["summary"]
        return summary


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    own = Broker(tmp_path)
    try:
        yield own
    finally:
        own.service.stop()


def _wait_records(bootstrap: str, topic: str, count: int, timeout_s: float = 60.0) -> None:
    """Read `topic` from its beginning until it holds `count` records (high watermarks lag
    the records on Tansu: they are no count)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "count",
                         "enable.auto.commit": False, "log_level": 0})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        seen = 0
        deadline = time.monotonic() + timeout_s
        while seen < count:
            assert time.monotonic() < deadline, f"{topic}: {seen} records, not {count}"
            seen += sum(1 for m in consumer.consume(10_000, 0.5) if not m.error())
    finally:
        consumer.close()


def test_records_lost_with_the_broker_are_sent_again_and_stored_once(
    broker: Broker, criteo_sample: Path, make_settings: Callable[..., CommonSettings]
) -> None:
    common = make_settings("redis", kafka_bootstrap=broker.url)
    rows = gzip.decompress(criteo_sample.read_bytes()).splitlines()
    part_a, part_b, part_c = rows[:2000], rows[2000:4000], rows[4000:5000]
    features = load_settings(
        FeaturesSettings, group=f"{common.redis_namespace}-features",
        dlq_topic=f"{common.redis_namespace}.features.dlq", stats_interval_s=1,
    )
    ingest = PipedIngest(
        common, load_settings(IngestSettings, linger_ms=5, topic_watch_interval_s=0.5))
    sink = ingest.sink
    try:
        # A: acknowledged and stored before the broker goes
        sink.write(b"\n".join(part_a) + b"\n")
        sink.flush()
        _wait_records(broker.url, common.topic_events, len(part_a))
        first = run_features(common, features, max_idle_s=3)
        assert first.samples_out == len(part_a)
        # B: acknowledged, not read by the worker, then lost with the broker
        sink.write(b"\n".join(part_b) + b"\n")
        sink.flush()
        _wait_records(broker.url, common.topic_events, len(part_a) + len(part_b))
        broker.restart_empty([common.topic_events, common.topic_events_dlq],
                             common.topic_partitions)
        # ingest sees the new topic id and sends its ring (A and B) again
        _wait_records(broker.url, common.topic_events, len(part_a) + len(part_b))
        # C: after the restart
        sink.write(b"\n".join(part_c) + b"\n")
    finally:
        sink.close()
    summary = ingest.finish(120)
    assert (summary.sent, summary.failed, summary.dead_lettered) == (5000, 0, 0)
    assert summary.topic_resets == 1
    assert summary.resent_after_topic_reset == len(part_a) + len(part_b)

    second = run_features(common, features, max_idle_s=5)
    client = redis.Redis.from_url(common.redis_url)
    try:
        stored = sum(len(b.samples) for b in read_blocks(client, common.redis_namespace))
        counters = read_counters(client, common.redis_namespace)
    finally:
        client.close()
    # every event sent is stored exactly once: B not lost, A not stored twice
    assert stored == summary.sent == len(rows[:5000])
    assert counters["duplicates_dropped_by_id"] == len(part_a)
    assert counters["topic_resets"] == 1
    assert second.samples_out == len(part_b) + len(part_c)


def _topic_id(bootstrap: str, topic: str) -> str | None:
    """The topic's id now, None while the broker does not know it (or does not answer)."""
    from confluent_kafka import KafkaException, TopicCollection
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return str(admin.describe_topics(TopicCollection([topic]))[topic].result(10).topic_id)
    except KafkaException:
        return None


def _wait_stored(client: redis.Redis, namespace: str, count: int, timeout_s: float) -> None:
    """Until the worker has read `count` events (bounded)."""
    deadline = time.monotonic() + timeout_s
    while read_counters(client, namespace).get("events_in", 0) < count:
        assert time.monotonic() < deadline, f"the worker did not read {count} events"
        time.sleep(0.5)


def _wait_topic_id(bootstrap: str, topic: str, timeout_s: float, other_than: str = "") -> str:
    """The topic's id once the broker knows the topic under an id other than `other_than`
    (bounded)."""
    deadline = time.monotonic() + timeout_s
    while (now := _topic_id(bootstrap, topic)) is None or now == other_than:
        assert time.monotonic() < deadline, f"{topic}: no new topic id within {timeout_s:.0f} s"
        time.sleep(0.5)
    return now


def test_steady_ingest_through_keeper_restarts_loses_and_repeats_nothing(
    tmp_path: Path, criteo_sample: Path, make_settings: Callable[..., CommonSettings]
) -> None:
    """The keeper's own restarts (a small memory budget), one ingest run at a steady 20,000
    events/s and the features worker reading all along: events sent == samples stored, exactly.

    The keeper restarts the broker only at a moment when every group has read every topic to
    its end, which a worker a few records behind a steady stream rarely is when it looks (a
    restart under way is opportunistic). So the stream pauses once, half way, until the keeper
    has restarted the broker (the topic's id changes), with ingest's producer and the worker
    connected: the second half then goes to the new topic incarnation, and both sides must
    notice."""
    spec = KafkaBroker(
        EmbeddedKafkaSettings(memory_mb=96, memory_limit_mb=0, check_interval_s=0.2)
    )
    rows = gzip.decompress(criteo_sample.read_bytes()).splitlines(keepends=True)
    copies = SENT // 2 // len(rows)  # of the sample, per half
    block = b"".join(rows)
    with start_service(spec, free_port(), tmp_path / "kafka") as service:
        common = make_settings("redis", kafka_bootstrap=service.url)
        features = load_settings(
            FeaturesSettings, group=f"{common.redis_namespace}-features",
            dlq_topic=f"{common.redis_namespace}.features.dlq", stats_interval_s=1,
        )
        stop = threading.Event()
        worker: dict[str, Any] = {}

        def consume() -> None:
            try:
                worker["summary"] = run_features(common, features, stop=stop)
            except BaseException as exc:  # re-raised by the test below
                worker["error"] = exc

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        ingest = PipedIngest(common, load_settings(IngestSettings, linger_ms=5), rate=20_000)
        sink = ingest.sink
        client = redis.Redis.from_url(common.redis_url)
        try:
            try:
                # ingest creates the topic before it reads a line
                first = _wait_topic_id(service.url, common.topic_events, timeout_s=60)
                for _ in range(copies):  # ingest paces it: 20,000 lines/s
                    sink.write(block)
                sink.flush()
                _wait_stored(client, common.redis_namespace, copies * len(rows), timeout_s=120)
                # the keeper restarts the broker (a new topic id)
                _wait_topic_id(service.url, common.topic_events, timeout_s=120, other_than=first)
                for _ in range(copies):
                    sink.write(block)
            finally:
                sink.close()
            summary = ingest.finish(180)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                now = read_counters(client, common.redis_namespace)
                if now.get("events_in", 0) >= summary.sent + summary.resent_after_topic_reset:
                    break
                time.sleep(0.5)
            time.sleep(3.0)  # whatever is still in flight
        finally:
            stop.set()
            thread.join(60)
        if "error" in worker:
            raise worker["error"]
        try:
            counters = read_counters(client, common.redis_namespace)
        finally:
            client.close()
    assert summary.failed == 0 and summary.sent == 2 * copies * len(rows)
    # samples_out: stored (the stream's own retention trims old blocks, counted apart)
    stored = counters["samples_out"]
    assert stored == summary.sent, (summary, counters)  # 0 lost, 0 stored twice
    assert counters["events_in"] == stored + counters.get("duplicates_dropped_by_id", 0)
    # the second half was written to the new incarnation: the worker reset its watermarks,
    # and ingest saw the new topic id (its resend ring went out again, dropped by event id)
    assert counters["topic_resets"] >= 1, (summary, counters)
    assert summary.topic_resets >= 1, (summary, counters)
