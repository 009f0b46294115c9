"""The Kafka side of ingest: topic creation and a producer that counts what it loses.

Delivery guarantees (librdkafka through confluent-kafka):
- acks=all, no idempotence (the broker has none), retries until `delivery_timeout_s`: a broker
  that is away for a few seconds delays delivery and loses nothing. A retry after a lost ack can
  write a record twice; the event id (its key) lets consumers drop the copy.
- Delivery reports are requested for failures only (`delivery.report.only.error`), so a success
  costs no Python callback; every failure is counted per topic and the first one is kept.
  `close` flushes, then purges and counts whatever is still undelivered: nothing is silently lost.
- Since successes are not reported, "everything so far is acknowledged" is read off the queue:
  `outstanding() == 0` (see `core.position`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from stages.common.errors import IngestError, ServiceUnavailable, require
from stages.common.settings import CommonSettings, kafka_client_config
from stages.ingest.settings import IngestSettings

log = logging.getLogger(__name__)
_POLL_EVERY = 8192  # records between two poll(0) calls (serves callbacks, frees the queue)


def producer_config(common: CommonSettings, settings: IngestSettings) -> dict[str, Any]:
    """The librdkafka configuration of the ingest producer (security settings included)."""
    conf = kafka_client_config(common)
    conf.update(
        {
            "acks": "all",
            "enable.idempotence": False,
            "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
            "retry.backoff.ms": 200,
            "retry.backoff.max.ms": 2000,
            "linger.ms": settings.linger_ms,
            "batch.size": settings.batch_bytes,
            "batch.num.messages": 1_000_000,
            "compression.type": settings.compression,
            "queue.buffering.max.messages": settings.queue_max_messages,
            "queue.buffering.max.kbytes": 1 << 20,
            "delivery.report.only.error": True,
            "socket.keepalive.enable": True,
        }
    )
    return conf


def _unavailable(common: CommonSettings, detail: object) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"cannot reach Kafka at {common.kafka_bootstrap} ({detail}); start the broker "
        "(freshrec infra up) or set FRESHREC_KAFKA_BOOTSTRAP"
    )


def topic_config(common: CommonSettings) -> dict[str, str]:
    """The topic configuration freshrec creates topics with: retention by time and by bytes
    per partition (FRESHREC_TOPIC_RETENTION_MS, FRESHREC_TOPIC_RETENTION_BYTES)."""
    return {
        "retention.ms": str(common.topic_retention_ms),
        "retention.bytes": str(common.topic_retention_bytes),
    }


def ensure_topics(common: CommonSettings, topics: list[str], timeout_s: float = 15.0) -> None:
    """Create the `topics` that are absent, with the configured partitions, replication and
    retention (`topic_config`). An existing topic is left as it is.

    Tansu 0.6.0 (the embedded broker, memory storage) accepts the retention configs and
    reports them back through DescribeConfigs, but measured, it does not delete by them (a
    partition with retention.ms 2,000 and retention.bytes 4,096 still starts at offset 0
    with 400 KB after 8 s); a Kafka broker (infra/cluster) does.
    tests/integration/features/test_features_event_dedupe.py checks what the broker reports."""
    kafka: Any = require("confluent_kafka", "ingest")
    admin_mod: Any = require("confluent_kafka.admin", "ingest")
    admin = admin_mod.AdminClient(kafka_client_config(common))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except kafka.KafkaException as exc:
        raise _unavailable(common, exc) from None
    new = [
        admin_mod.NewTopic(
            t, common.topic_partitions, common.topic_replication, config=topic_config(common)
        )
        for t in topics
        if t not in existing
    ]
    if not new:
        admin.poll(0)
        return
    try:
        for topic, future in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
            except kafka.KafkaException as exc:
                if exc.args and exc.args[0].code() == kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise IngestError(f"cannot create topic {topic!r}: {exc}") from None
            log.info("created topic %s (%d partitions)", topic, common.topic_partitions)
    finally:
        admin.poll(0)  # serve pending events, or the client logs "Purging unserved events"


class CountingProducer:
    """A confluent-kafka producer that counts undelivered records per topic.

    Thread-safety: one thread calls `send`/`close`; librdkafka calls back from `poll`.
    """

    def __init__(self, common: CommonSettings, settings: IngestSettings) -> None:
        kafka: Any = require("confluent_kafka", "ingest")
        self._kafka = kafka
        self._failed: Counter[str] = Counter()
        self.first_error: str | None = None
        self._lock = threading.Lock()
        conf = producer_config(common, settings)
        conf["on_delivery"] = self._on_delivery
        conf["error_cb"] = self._on_error
        self._producer = kafka.Producer(conf)
        self._close_timeout = settings.delivery_timeout_s + 30.0

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:  # only failures are reported; be safe anyway
            return
        with self._lock:
            self._failed[msg.topic()] += 1
            if self.first_error is None:
                self.first_error = f"{msg.topic()}: {err.str()}"
                log.error("record not delivered: %s", self.first_error)

    def _on_error(self, err: Any) -> None:
        # Broker away, all brokers down...: librdkafka keeps retrying until message.timeout.ms.
        log.warning("kafka: %s", err.str())

    def failed(self, topic: str) -> int:
        """Records of `topic` that were finally not delivered, so far."""
        with self._lock:
            return self._failed[topic]

    def failed_total(self) -> int:
        """Records of all topics finally not delivered, so far."""
        with self._lock:
            return sum(self._failed.values())

    def outstanding(self) -> int:
        """Serve the reports, then count the records queued or in flight (0: every record
        handed so far is acknowledged or counted as failed). librdkafka queues a report event
        per acknowledged batch even when it filters successes out, and counts it until served."""
        self._producer.poll(0)
        return len(self._producer)

    def wait_acked(self, stop: threading.Event | None, timeout_s: float) -> bool:
        """Flush (sends at once, ignoring linger.ms) until nothing is outstanding, `stop` is
        set or `timeout_s` passed; True when nothing is outstanding."""
        deadline = time.monotonic() + timeout_s
        while self._producer.flush(min(0.1, max(0.0, deadline - time.monotonic()))):
            if (stop is not None and stop.is_set()) or time.monotonic() >= deadline:
                return False
        return True

    def send(self, topic: str, keys: list[bytes], values: list[bytes]) -> None:
        """Queue records (key i, value i); blocks while the local queue is full."""
        produce, poll = self._producer.produce, self._producer.poll
        for start in range(0, len(values), _POLL_EVERY):
            end = min(start + _POLL_EVERY, len(values))
            try:
                for i in range(start, end):
                    produce(topic, values[i], keys[i])
            except BufferError:
                self._send_slow(topic, keys, values, i, end)
            poll(0)

    def _send_slow(
        self, topic: str, keys: list[bytes], values: list[bytes], i: int, end: int
    ) -> None:
        while i < end:
            try:
                self._producer.produce(topic, values[i], keys[i])
                i += 1
            except BufferError:
                self._producer.poll(0.05)  # the queue is full: let deliveries drain it

    def poll(self) -> None:
        """Serve delivery callbacks (cheap; ingest calls it between batches)."""
        self._producer.poll(0)

    def close(self, timeout_s: float | None = None) -> int:
        """Flush; what is still undelivered after `timeout_s` (default: the delivery timeout
        and 30 s) is purged and counted as failed.

        Returns the number of records purged.
        """
        timeout = self._close_timeout if timeout_s is None else timeout_s
        remaining = int(self._producer.flush(timeout))
        if remaining:
            log.error("%d records still undelivered at exit: counting them as failed", remaining)
            self._producer.purge()
            self._producer.flush(10.0)
        # The callbacks hold `self`: close the client now rather than when the cycle is collected
        # (until then it would keep its broker connections and log their loss).
        close = getattr(self._producer, "close", None)  # confluent-kafka >= 2.13
        if close is not None:
            close()
        return remaining
