"""Sending the newest records again when the events topic was recreated (issue #12).

The embedded broker's keeper restarts it empty once every group has read every topic to its
end; records acknowledged between its check and its kill are lost (infra/services/
broker_keeper.py). A `TopicWatch` thread asks the broker for the events topic's id about once
a second (DescribeTopics; a recreated topic gets a new id); when the id changes, that thread
sends the `SentRing` again at once (librdkafka's produce is thread-safe), so a source that is
idle (a quiet stdin) does not hold the copies back. The features
stage stores each event id once (its event-id state survives topic resets), so the copies of
records it had already stored are dropped, and the lost ones are stored once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from stages.common.errors import require
from stages.common.settings import CommonSettings, kafka_client_config
from stages.ingest.core.ring import RingLimits, SentRing
from stages.ingest.kafka import CountingProducer
from stages.ingest.settings import IngestSettings

log = logging.getLogger(__name__)

#: What brokers without topic ids answer (Kafka < 2.8): no change can be seen.
_NO_ID = frozenset({"", "AAAAAAAAAAAAAAAAAAAAAA", "00000000-0000-0000-0000-000000000000"})


class TopicWatch:
    """A daemon thread that reads `topic`'s id every `interval_s` and calls `on_change()` (in
    that thread) when it changed.

    Unanswered requests (broker away) and an unknown topic (not created again yet) leave the
    last id known; the first id seen is adopted without a call.
    """

    def __init__(
        self, common: CommonSettings, topic: str, interval_s: float, on_change: Callable[[], None]
    ) -> None:
        require("confluent_kafka", "ingest")
        from confluent_kafka.admin import AdminClient

        conf: dict[str, Any] = kafka_client_config(common)
        conf["log_level"] = 0  # a broker away is normal here; the producer logs it already
        self._admin = AdminClient(conf)
        self._topic = topic
        self._interval_s = interval_s
        self._known: str | None = None
        self._on_change = on_change
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-topic-watch", daemon=True)

    def start(self) -> TopicWatch:
        self._thread.start()
        return self

    def check(self) -> None:
        """Read the id once now, in the caller's thread (calls `on_change` like the thread)."""
        topic_id = self._describe()
        if topic_id is None or topic_id in _NO_ID:
            return
        with self._lock:  # one check at a time: a change is reported once
            changed = self._known is not None and topic_id != self._known
            if changed:
                log.warning("topic %s was recreated (id %s -> %s)", self._topic, self._known,
                            topic_id)
            self._known = topic_id
            if changed:
                self._on_change()

    def close(self) -> None:
        """Stop the thread (waits for the request in flight, at most a few seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check()

    def _describe(self) -> str | None:
        from confluent_kafka import KafkaException, TopicCollection

        timeout = max(1.0, self._interval_s)
        try:
            future = self._admin.describe_topics(
                TopicCollection([self._topic]), request_timeout=timeout
            )[self._topic]
            description = future.result(timeout + 1.0)
        except (KafkaException, TimeoutError) as exc:  # broker away or topic not there yet
            log.debug("topic %s: no id now (%s)", self._topic, exc)
            return None
        return str(description.topic_id) if description.topic_id is not None else ""


class Resender:
    """The resend ring of the events topic and its watch: `sent` after each batch handed to
    the producer; the watch thread sends the ring again on a topic id change. `close` reads
    the id once more (a change while the last records were acknowledged), then stops the
    watch; call it before closing the producer. Off (does nothing) when
    `resend_ring_records` is 0."""

    def __init__(
        self, common: CommonSettings, settings: IngestSettings, producer: CountingProducer
    ) -> None:
        self._topic = common.topic_events
        self._producer = producer
        # At most half the features' dedupe window (FRESHREC_FEATURES_DEDUPE_WINDOW) of records,
        # all partitions together, so at most half of it per partition and source: the copies
        # (and the records sent until the change is seen) stay inside the window, where the
        # features stage recognises and drops the ones it had stored.
        self._ring = SentRing(
            RingLimits(settings.resend_ring_records, settings.resend_ring_bytes,
                       settings.resend_ring_s)
        )
        self._lock = threading.Lock()
        self._watch: TopicWatch | None = None
        if settings.resend_ring_records > 0:
            self._watch = TopicWatch(
                common, self._topic, settings.topic_watch_interval_s, self._resend
            )
        #: Topic id changes seen, and records sent again after them.
        self.topic_resets = 0
        self.resent = 0

    def start(self) -> Resender:
        """Read the topic id once now (the incarnation the first records go to), then watch."""
        if self._watch is not None:
            self._watch.check()
            self._watch.start()
        return self

    def sent(self, keys: list[bytes], values: list[bytes], now: float) -> None:
        """Remember records just handed to the producer (`now`: time.monotonic())."""
        if self._watch is not None:
            with self._lock:
                self._ring.add(keys, values, now)

    def _resend(self) -> None:
        with self._lock:
            self._ring.expire(time.monotonic())
            keys, values = self._ring.records()
            log.warning("topic %s was recreated: sending the newest %d records again (%d bytes)",
                        self._topic, len(values), self._ring.size_bytes)
            self._producer.send(self._topic, keys, values)
            self.topic_resets += 1
            self.resent += len(values)

    def close(self, final_check: bool) -> None:
        """Stop the watch; `final_check`: read the topic id once more first (after every record
        was acknowledged)."""
        if self._watch is None:
            return
        self._watch.close()
        if final_check:
            self._watch.check()
