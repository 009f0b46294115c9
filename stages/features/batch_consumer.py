"""The batch consumer: one aiokafka group member that hands whole fetches to the runtime.

Faust's stream engine moves every record through its own queue and task hand-offs (about
150 us a record on this machine, ~6,000 events/s), far below the 50,000 events/s goal. In
`consumer="batch"` mode (the default) the Faust worker still owns the process (lifecycle,
timers, web server, dead-letter producer), but this task consumes the events topic: `getmany`
returns a fetch of up to `batch_max` records in columns, `FeaturesRuntime.handle` writes it to
Redis exactly once, and only then are the offsets committed (never auto-commit). A commit that
fails because the partitions moved to another worker is harmless: the new owner replays, and the
Redis watermark skips what was stored.
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
) -> None:
    from aiokafka.errors import CommitFailedError, IllegalStateError

    await runtime.store(prepared, send_dead)
    try:
        await consumer.commit(commit)
    except (CommitFailedError, IllegalStateError) as exc:
        # The partitions moved to another worker (a rebalance) while this batch was stored.
        log.warning("offset commit refused (%s): the next owner replays, Redis skips", exc)


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
            prepared = await asyncio.to_thread(
                runtime.prepare, records_of(common.topic_events, fetch)
            )
            commit = {tp: recs[-1].offset + 1 for tp, recs in fetch.items() if recs}
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(
                _store_and_commit(runtime, prepared, send_dead, consumer, commit)
            )
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            # The script is atomic in Redis: it ran or it did not; a replay sorts it out.
            writing.cancel()
        await consumer.stop()
        await runtime.close()
