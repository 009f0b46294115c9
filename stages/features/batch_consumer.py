"""The batch consumer: one aiokafka group member that hands whole fetches to the runtime.

Faust's stream engine moves every record through its own queue and task hand-offs (about
150 us a record on this machine, ~6,000 events/s), far below the 50,000 events/s goal. In
`consumer="batch"` mode (the default) the Faust worker still owns the process (lifecycle,
timers, web server, dead-letter producer), but this task consumes the events topic: `getmany`
returns a fetch of up to `batch_max` records in columns, `FeaturesRuntime.handle` writes it to
Redis exactly once, and only then are the offsets committed (never auto-commit). A commit that
fails (the partitions moved to another worker, or the broker is paused or restarting) is
harmless: the next owner replays, and the Redis watermark skips what was stored.

Topic incarnations: after each fetch the worker asks the broker for the topic id
(`TopicIncarnation`) and writes the batch under it; the Redis script resets the watermarks when
the id is new (store.py). When the answer differs from the previous fetch's, the topic was
recreated while this consumer read it, and the fetch may hold records of either incarnation
(aiokafka prefetches): it is discarded and the partitions are read again from the beginning of
the new incarnation, whose offsets the restarted broker forgot anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from stages.common.errors import ServiceUnavailable, require
from stages.common.settings import CommonSettings, aiokafka_client_kwargs
from stages.features.core import RecordBatch
from stages.features.pipeline import (
    DeadLetterSender,
    FeaturesRuntime,
    PreparedBatch,
    consumer_lag,
)
from stages.features.settings import FeaturesSettings
from stages.features.topic_ids import TopicIncarnation

log = logging.getLogger("freshrec.features")


def records_of(topic: str, fetch: dict[Any, list[Any]]) -> RecordBatch:
    """aiokafka `getmany` result -> RecordBatch (partitions in fetch order, offsets kept)."""
    partitions: list[int] = []
    offsets: list[int] = []
    keys: list[bytes | None] = []
    values: list[bytes] = []
    for tp, records in fetch.items():
        partitions.extend([tp.partition] * len(records))
        offsets.extend([r.offset for r in records])
        keys.extend([r.key for r in records])
        values.extend([r.value for r in records])
    return RecordBatch(
        topic, np.asarray(partitions, np.int32), np.asarray(offsets, np.int64), keys, values
    )


async def _store_and_commit(
    runtime: FeaturesRuntime,
    prepared: PreparedBatch,
    send_dead: DeadLetterSender,
    consumer: Any,
    commit: dict[Any, int],
    topic_id: str,
) -> None:
    from aiokafka.errors import KafkaError

    await runtime.store(prepared, send_dead, topic_id)
    try:
        await consumer.commit(commit)
    except KafkaError as exc:
        # The partitions moved to another worker (a rebalance) while this batch was stored,
        # or the broker is away: a replay follows, which the Redis watermarks skip.
        runtime.counters.commit_failures += 1
        log.warning("offset commit failed (%r): the next owner replays, Redis skips", exc)


async def _reread_new_incarnation(
    runtime: FeaturesRuntime, consumer: Any, topic: str, old_id: str, new_id: str
) -> None:
    """The topic id changed between two fetches: drop the fetch (it may mix incarnations) and
    read every assigned partition again from the new incarnation's beginning."""
    runtime.counters.topic_changes += 1
    partitions = [tp for tp in consumer.assignment() if tp.topic == topic]
    log.warning(
        "topic %s was recreated under this worker (topic id %s -> %s): the broker restarted "
        "empty or the topic was deleted; dropping the last fetch and reading partitions %s "
        "again from the beginning", topic, old_id, new_id, sorted(tp.partition for tp in partitions)
    )
    if partitions:
        await consumer.seek_to_beginning(*partitions)


async def consume_batches(
    common: CommonSettings,
    settings: FeaturesSettings,
    runtime: FeaturesRuntime,
    send_dead: DeadLetterSender,
    should_stop: Callable[[], bool],
) -> None:
    """Consume the events topic until `should_stop()` (or cancellation), batch by batch."""
    aiokafka: Any = require("aiokafka", "features")
    from aiokafka.errors import KafkaError

    class Listener(aiokafka.ConsumerRebalanceListener):  # type: ignore[misc, name-defined]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            log.info("revoked partitions %s", sorted(tp.partition for tp in revoked))

        async def on_partitions_assigned(self, assigned: Any) -> None:
            runtime.touch()  # idleness counts from the last assignment
            log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))

    consumer = aiokafka.AIOKafkaConsumer(
        group_id=settings.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_s * 1000),
        max_poll_records=settings.batch_max,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
        **aiokafka_client_kwargs(common),
    )
    consumer.subscribe([common.topic_events], listener=Listener())
    runtime.lag_probe = lambda: consumer_lag(consumer, runtime)
    within_ms = int(settings.batch_within_s * 1000)
    writing: asyncio.Future[None] | None = None
    incarnation = TopicIncarnation(
        common, settings.kafka_retry_s, timeout_s=min(10.0, settings.kafka_retry_s)
    )
    topic = common.topic_events
    last_id: str | None = None
    try:
        try:
            await consumer.start()
        except KafkaError as exc:
            raise ServiceUnavailable(
                f"Kafka at {common.kafka_bootstrap} does not answer ({exc}): start it or set "
                "FRESHREC_KAFKA_BOOTSTRAP"
            ) from exc
        await runtime.start()
        # Two stages in flight: while Redis stores batch k (and Kafka commits it), this loop
        # fetches and decodes batch k+1. Writes and commits stay in fetch order.
        while not should_stop():
            fetch = await consumer.getmany(timeout_ms=within_ms, max_records=settings.batch_max)
            if not fetch:
                if writing is not None:
                    await writing
                    writing = None
                continue
            prepared, topic_id = await asyncio.gather(
                asyncio.to_thread(runtime.prepare, records_of(topic, fetch)),
                incarnation.current(topic),
            )
            runtime.counters.kafka_retries = incarnation.retries
            if last_id is not None and topic_id != last_id:
                if writing is not None:
                    await writing
                    writing = None
                await _reread_new_incarnation(runtime, consumer, topic, last_id, topic_id)
                last_id = topic_id
                continue
            last_id = topic_id
            commit = {tp: recs[-1].offset + 1 for tp, recs in fetch.items() if recs}
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(
                _store_and_commit(runtime, prepared, send_dead, consumer, commit, topic_id)
            )
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            # The script is atomic in Redis: it ran or it did not; a replay sorts it out.
            writing.cancel()
        await consumer.stop()
        await runtime.close()
