"""Which incarnation of the events topic the worker is reading: the Kafka topic id.

A broker that restarts empty (the embedded Tansu keeps topics in memory), or a topic deleted
and created again, starts the offsets over at 0 under a NEW topic id (Kafka >= 2.8 and Tansu
give every created topic a random UUID; checked on Tansu: a restart gives another id). The
fetched records carry no id (aiokafka speaks Fetch versions without topic ids), so the worker
asks the broker (DescribeTopics, librdkafka) after every fetch: a record returned by a fetch
that ended before the answer was given belongs to that incarnation or an older one, and an
older one shows as a change of answer between two fetches (see `batch_consumer.py`).

High watermarks are not used: on Tansu they lag the records and are no marker of anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from stages.common.errors import ServiceUnavailable, require
from stages.common.settings import CommonSettings, kafka_client_config

log = logging.getLogger("freshrec.features")

#: What brokers without topic ids answer (Kafka < 2.8): no incarnation check is possible.
_NO_ID = frozenset({"", "AAAAAAAAAAAAAAAAAAAAAA", "00000000-0000-0000-0000-000000000000"})


class TopicIncarnation:
    """Asks the broker for a topic's id, with bounded retries (`retry_budget_s`) when it does
    not answer (paused, restarting) or does not know the topic yet (being recreated)."""

    def __init__(self, common: CommonSettings, retry_budget_s: float, timeout_s: float) -> None:
        require("confluent_kafka", "features")
        from confluent_kafka.admin import AdminClient

        conf: dict[str, Any] = kafka_client_config(common)
        conf["log_level"] = 0  # failures come back through the futures, counted and logged here
        self._admin = AdminClient(conf)
        self._budget_s = retry_budget_s
        self._timeout_s = timeout_s
        self._bootstrap = common.kafka_bootstrap
        #: Failed DescribeTopics calls (broker away, or topic unknown) since start.
        self.retries = 0
        self._warned_no_id = False

    def describe(self, topic: str) -> str | None:
        """The topic id now (blocking, one request): "" when the broker gives none, None when
        it does not know the topic. KafkaException when the broker does not answer."""
        from confluent_kafka import KafkaError, KafkaException, TopicCollection

        future = self._admin.describe_topics(
            TopicCollection([topic]), request_timeout=self._timeout_s
        )[topic]
        try:
            description = future.result(self._timeout_s + 1.0)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            raise
        value = str(description.topic_id) if description.topic_id is not None else ""
        if value in _NO_ID:
            if not self._warned_no_id:
                self._warned_no_id = True
                log.warning(
                    "the broker gives no topic id for %s: a recreated topic (a broker that "
                    "restarted empty) cannot be told apart from a replay", topic
                )
            return ""
        return value

    async def current(self, topic: str) -> str:
        """The topic id, retried with backoff while the broker does not answer or does not
        know the topic; ServiceUnavailable after `retry_budget_s`."""
        deadline = time.monotonic() + self._budget_s
        delay = 0.2
        while True:
            try:
                found = await asyncio.to_thread(self.describe, topic)
                if found is not None:
                    return found
                problem = f"topic {topic} unknown to the broker (being recreated?)"
            except Exception as exc:  # noqa: BLE001 - librdkafka raises KafkaException or timeouts
                problem = f"{type(exc).__name__}: {exc}"
            self.retries += 1
            if time.monotonic() + delay > deadline:
                raise ServiceUnavailable(
                    f"Kafka at {self._bootstrap} could not describe {topic} for "
                    f"{self._budget_s:.0f} s ({problem}): start the broker or set "
                    "FRESHREC_KAFKA_BOOTSTRAP (FRESHREC_FEATURES_KAFKA_RETRY_S bounds the wait)"
                )
            log.warning("topic id of %s unknown (%s); retrying in %.1f s", topic, problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def ensure_dead_letter_topic(common: CommonSettings, topic: str, timeout_s: float = 15.0) -> None:
    """Create this stage's dead-letter topic (1 partition) with the topic retention settings
    (FRESHREC_TOPIC_RETENTION_MS / _BYTES) when it is absent. Faust declares only internal
    topics: without this, the broker would auto-create it at the first dead letter with its
    own defaults. A broker that does not answer is logged and left to the consumer's own
    start-up errors (the topic is then auto-created as before)."""
    require("confluent_kafka", "features")
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    conf: dict[str, Any] = kafka_client_config(common)
    conf["log_level"] = 0
    admin = AdminClient(conf)
    config = {
        "retention.ms": str(common.topic_retention_ms),
        "retention.bytes": str(common.topic_retention_bytes),
    }
    try:
        if topic in admin.list_topics(timeout=timeout_s).topics:
            return
        new = NewTopic(topic, 1, common.topic_replication, config=config)
        admin.create_topics([new], operation_timeout=timeout_s)[topic].result(timeout_s)
        log.info("created dead-letter topic %s (retention %s)", topic, config)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return
        log.warning(
            "could not create the dead-letter topic %s with its retention settings (%s): the "
            "broker will create it with its defaults at the first dead letter", topic, exc
        )
    finally:
        admin.poll(0)
