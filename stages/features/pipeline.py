"""One worker's processing state: micro-batch -> dead letters -> atomic Redis write -> counters.

The worker runs one feature schema (FRESHREC_SCHEMA, `common.schema()`): events are decoded with
its row parser, transformed with its layout, and stored as blocks carrying its hash; `start`
stops with SchemaError when the store already holds samples of another schema
(`store_schema.py`).

Transport-agnostic (the Faust app in `app.py` feeds it `RecordBatch`es and a dead-letter sender),
so the same code runs under `freshrec features`, `faust -A ... worker` and the benchmark.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from stages.common.errors import FeaturesError, ServiceUnavailable
from stages.common.settings import CommonSettings, redact_url
from stages.features.core import (
    DeadLetter,
    DedupeConfig,
    FieldStats,
    RecordBatch,
    SchemaCodec,
    SplitResult,
    split_batch,
    warm_up,
)
from stages.features.settings import FeaturesSettings
from stages.features.store import SampleStore, WriteReport
from stages.features.store_schema import claim_store_schema

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("freshrec.features")
T = TypeVar("T")

DeadLetterSender = Callable[[list[DeadLetter]], Awaitable[None]]
_FIRST_RETRY_S, _MAX_RETRY_S = 0.2, 5.0


@dataclass
class RunCounters:
    """What this worker did since it started (the store keeps the all-time counters)."""

    events_in: int = 0
    samples_out: int = 0
    dead_letters: int = 0
    duplicates_skipped: int = 0
    duplicates_dropped_by_id: int = 0  # re-sent events (same event id, new offset), not stored
    dedupe_unchecked: int = 0  # samples stored without an id check (older than the window)
    repeated_in_batch: int = 0
    batches: int = 0
    topic_resets: int = 0  # writes that found a new topic incarnation and reset its watermarks
    topic_changes: int = 0  # fetches discarded because the topic id changed under the consumer
    stale_skipped: int = 0  # events of a retired topic incarnation, not stored
    store_resets: int = 0  # the store epoch changed under this worker (Redis came back empty)
    redis_retries: int = 0  # Redis calls retried after a connection error or timeout
    kafka_retries: int = 0  # topic id requests retried (broker away, topic being recreated)
    commit_failures: int = 0  # Kafka offset commits refused or failed (a replay follows)
    started: float = field(default_factory=time.monotonic)
    last_activity: float | None = None  # None until the first assignment or batch
    first_batch_at: float | None = None
    first_batch_events: int = 0
    records_seen: int = 0
    last_batch_at: float | None = None
    next_offset: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedBatch:
    """A decoded micro-batch of `records` Kafka records, ready for `FeaturesRuntime.store`.
    `stats[i]` are the statistics of `split.batches[i]`."""

    split: SplitResult
    records: int
    stats: list[FieldStats]


def redis_client(common: CommonSettings, timeout_s: float | None = None) -> Redis:
    """An asyncio Redis client for the feature store (bytes in, bytes out); `timeout_s`: the
    socket connect and read timeout (None: none)."""
    from stages.common.errors import require

    require("redis", "features")
    from redis.asyncio import Redis

    password = common.redis_password.get_secret_value() if common.redis_password else None
    return Redis.from_url(
        common.redis_url,
        password=password,
        decode_responses=False,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )


class FeaturesRuntime:
    """The processing state of one worker. Call `start` inside the event loop, then `handle`
    for each micro-batch, `flush_stats` now and then, and `close` at the end."""

    def __init__(self, common: CommonSettings, settings: FeaturesSettings) -> None:
        """SchemaError when FRESHREC_SCHEMA does not name a valid schema."""
        self.common = common
        self.settings = settings
        self.codec = SchemaCodec.for_schema(common.schema())
        self.counters = RunCounters()
        self._client: Redis | None = None
        self._store: SampleStore | None = None
        self._pending = self.codec.empty_stats()
        self._pending_rows = 0
        self._lock = asyncio.Lock()
        #: Set by the consumer in use: events not processed yet in its partitions, or None.
        self.lag_probe: Callable[[], int | None] = lambda: None
        self._last_progress = (time.monotonic(), 0)
        #: The store epoch of the last write (None before the first).
        self.epoch: str | None = None

    async def start(self) -> None:
        """Connect to Redis and claim the store for this worker's schema (idempotent);
        ServiceUnavailable when Redis does not answer, SchemaError when the store holds
        samples of another feature schema."""
        if self._store is not None:
            return
        from redis.exceptions import RedisError

        client = redis_client(self.common, self.settings.redis_socket_timeout_s)
        try:
            await client.ping()
        except RedisError as exc:
            await client.aclose()
            raise ServiceUnavailable(
                f"Redis at {redact_url(self.common.redis_url)} does not answer ({exc}): start it "
                "(`freshrec infra up`) or set FRESHREC_REDIS_URL"
            ) from exc
        try:
            if await claim_store_schema(client, self.common.redis_namespace, self.codec.schema):
                log.info("feature store claimed for schema %s", self.codec.schema.schema_id)
        except BaseException:
            await client.aclose()
            raise
        # In a thread: it imports for seconds, and the consumer's heartbeats share this loop.
        await asyncio.to_thread(warm_up, self.codec)
        self._client = client
        self._store = SampleStore(
            client,
            self.common.redis_namespace,
            self.settings.retention_blocks,
            retention_bytes=self.settings.retention_mb << 20,
            dedupe=DedupeConfig(self.settings.dedupe_window, self.settings.dedupe_sources),
        )

    async def handle(
        self, records: RecordBatch, send_dead: DeadLetterSender, topic_id: str = ""
    ) -> None:
        """Process one micro-batch, fetched under topic incarnation `topic_id` ("" = unknown),
        exactly once into the store.

        Dead letters are sent (and acknowledged by the broker) BEFORE the Redis write that
        consumes their offsets, so a crash in between re-sends them: the dead-letter topic is
        at least once. Transient Redis errors are retried with backoff for `redis_retry_s`.
        """
        await self.store(self.prepare(records), send_dead, topic_id)

    def prepare(self, records: RecordBatch) -> PreparedBatch:
        """The CPU part of `handle` (decode, transform, statistics, split per partition).
        Pure, so it may run in a thread."""
        codec = self.codec
        split = split_batch(records, codec)
        stats = [codec.stats(b.raw, b.samples.ids) for b in split.batches]
        return PreparedBatch(split, len(records), stats)

    async def store(
        self, prepared: PreparedBatch, send_dead: DeadLetterSender, topic_id: str = ""
    ) -> None:
        """The I/O part of `handle`: dead letters, then the atomic Redis write, then counters.
        Calls for the same partitions must not overlap (await one before the next)."""
        if self._store is None:
            raise FeaturesError("FeaturesRuntime.store called before start()")
        split = prepared.split
        dead = [d for b in split.batches for d in b.dead_letters]
        if dead:
            await send_dead(dead)
        store = self._store
        report = await self._with_retry(lambda: store.write(split.batches, topic_id))
        topic = split.batches[0].topic if split.batches else ""
        await self._noticed(report, topic, topic_id)
        c = self.counters
        precomputed = {id(b): s for b, s in zip(split.batches, prepared.stats)}
        for batch in report.written:
            # A batch trimmed after an overlap is a new object: its statistics are recomputed.
            stats = precomputed.get(id(batch)) or self.codec.stats(batch.raw, batch.samples.ids)
            self._pending = self._pending.merge(stats)
            self._pending_rows += len(batch.samples)
            c.samples_out += len(batch.samples)
            c.dead_letters += len(batch.dead_letters)
            c.duplicates_dropped_by_id += batch.dropped_by_id
            c.events_in += batch.events
        for batch in split.batches:
            c.next_offset[batch.partition] = batch.last_offset + 1
        c.duplicates_skipped += report.duplicates
        c.dedupe_unchecked += report.unchecked_ids
        c.repeated_in_batch += split.repeated
        c.batches += 1
        c.records_seen += prepared.records
        c.last_activity = c.last_batch_at = time.monotonic()
        if c.first_batch_at is None:
            c.first_batch_at, c.first_batch_events = c.last_batch_at, prepared.records

    async def _noticed(self, report: WriteReport, topic: str, topic_id: str) -> None:
        """Log and count the resets a write noticed (per batch, not per event)."""
        c = self.counters
        if report.topic_reset:
            c.topic_resets += 1
            log.warning(
                "topic %s was recreated (new topic id %s): the broker restarted empty or the "
                "topic was deleted; its watermarks were reset to 0 and the new incarnation is "
                "stored from its start (a topic_reset line in gaps)", topic, topic_id
            )
        if report.stale:
            c.stale_skipped += report.stale
            log.warning(
                "%d events fetched from a retired incarnation of %s were not stored (the topic "
                "was recreated meanwhile; counted as stale_skipped)", report.stale, topic
            )
        if report.epoch and report.epoch != self.epoch:
            if self.epoch is None:
                log.info("feature store epoch %s", report.epoch)
            else:
                c.store_resets += 1
                log.warning(
                    "the feature store lost its data under this worker (store epoch %s -> %s: "
                    "Redis restarted empty?); going on from the Kafka position, every later "
                    "event is stored once", self.epoch, report.epoch
                )
                store, client = self._store, self._client
                if store is not None:
                    await self._with_retry(lambda: store.count("store_resets"))
                if client is not None:  # the empty store is this schema's again
                    schema = self.codec.schema
                    ns = self.common.redis_namespace
                    await self._with_retry(lambda: claim_store_schema(client, ns, schema))
            self.epoch = report.epoch

    async def flush_stats(self) -> int | None:
        """Merge the statistics gathered since the last flush into Redis; the new version,
        or None when there was nothing to flush."""
        if self._store is None or self._pending_rows == 0:
            return None
        async with self._lock:
            delta, self._pending, self._pending_rows = self._pending, self.codec.empty_stats(), 0
            store = self._store
            return await self._with_retry(lambda: store.merge_stats(delta))

    def progress_line(self, lag: int | None) -> str:
        """One log line: totals since start, and the event rate since the previous line."""
        c = self.counters
        now = time.monotonic()
        then, seen = self._last_progress
        rate = (c.records_seen - seen) / max(now - then, 1e-9)
        self._last_progress = (now, c.records_seen)
        return (
            f"events={c.events_in} ({rate:.0f}/s) samples={c.samples_out} "
            f"dead_letters={c.dead_letters} duplicates_skipped={c.duplicates_skipped} "
            f"duplicates_dropped_by_id={c.duplicates_dropped_by_id} "
            f"batches={c.batches} lag={'?' if lag is None else lag}"
        )

    def touch(self) -> None:
        """Count the worker as active now (a partition assignment, for `idle_s`)."""
        self.counters.last_activity = time.monotonic()

    def idle_s(self) -> float:
        """Seconds since the last micro-batch or partition assignment; 0.0 before the first
        (joining the consumer group takes seconds and is not idleness)."""
        last = self.counters.last_activity
        return 0.0 if last is None else time.monotonic() - last

    async def close(self) -> None:
        """Flush the statistics and close the Redis connection."""
        if self._client is None:
            return
        try:
            await self.flush_stats()
        finally:
            await self._client.aclose()
            self._client, self._store = None, None

    async def _with_retry(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, retried with backoff (0.2 s doubling to 5 s) after connection errors and
        timeouts for `redis_retry_s`. Safe for the write script: one that ran but whose reply
        was lost answers DUPLICATE on the retry."""
        from redis.exceptions import ConnectionError, TimeoutError

        deadline = time.monotonic() + self.settings.redis_retry_s
        delay = _FIRST_RETRY_S
        while True:
            try:
                return await call()
            except (ConnectionError, TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise ServiceUnavailable(
                        f"Redis at {redact_url(self.common.redis_url)} kept failing for "
                        f"{self.settings.redis_retry_s:.0f} s ({exc}): check the server "
                        "(FRESHREC_FEATURES_REDIS_RETRY_S bounds the wait)"
                    ) from exc
                self.counters.redis_retries += 1
                log.warning("Redis error %r; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_S)


def consumer_lag(consumer: Any, runtime: FeaturesRuntime) -> int | None:
    """Events in the assigned partitions not processed yet (from the consumer's high
    waters), or None when the consumer cannot tell yet. Works for Faust's and aiokafka's."""
    try:
        total = 0
        assigned = consumer.assignment()
        if not assigned:
            return None
        for tp in assigned:
            high = consumer.highwater(tp)
            done = runtime.counters.next_offset.get(tp.partition)
            if high is None or done is None:
                return None
            total += max(0, int(high) - done)
        return total
    except Exception as exc:  # noqa: BLE001 - lag is a best-effort field of a log line
        log.debug("lag unknown: %r", exc)
        return None
