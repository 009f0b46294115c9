"""The Redis adapter of the features stage: exactly-once sample writes and statistics snapshots.

Exactly once without Kafka transactions: each (partition, micro-batch) is written by ONE Lua
script (EVALSHA) that, atomically,

0. sets the store epoch (`keys.store_epoch`) with SET NX to the id this worker generated, and
   returns the epoch in force: a Redis that came back empty gets a new epoch, which is how this
   worker (`WriteReport.epoch`) and the trainer notice a store reset;
1. checks the topic incarnation: the batch carries the Kafka topic id it was fetched under
   (`""`: unknown, the check is skipped). The `offsets:<topic>` hash keeps the id of the
   incarnation its watermarks belong to in the field `topic_id` (partition fields are digits
   only, so the names cannot meet). Another id means the topic was recreated (a broker that
   restarted empty, a topic deleted and created again): the script resets every partition's
   watermark to 0, marks the old id `retired:<id>`, appends a `TopicResetRecord` line to `gaps`,
   counts `topic_resets` (and `topic_resets:<topic>`) and goes on storing the batch (reset=1 in
   the reply). A batch carrying a RETIRED id (fetched before the recreation, written after
   another worker saw it) stores nothing: STALE, counted as `stale_skipped`. The first id seen
   (or an id added to watermarks written before ids were kept) is adopted without a reset;
2. reads the partition's watermark (next offset to store) from `offsets:<topic>` (keys.py);
   last_offset < watermark: a replay -> stores nothing, adds the events to
   `duplicates_skipped`, returns DUPLICATE;
   first_offset < watermark <= last_offset: a partial replay -> stores nothing, returns
   OVERLAP with the watermark; the caller drops the stored rows (`PartitionBatch.since`) and
   calls again, passing how many it dropped (added to `duplicates_skipped` on success);
   first_offset > watermark: offsets went missing -> a line in `gaps`, then goes on (an
   `OffsetGapRecord` of stages/common/gaps.py, schema version 1: the script builds the same
   fields as `OffsetGapRecord.to_json`, and the integration tests parse what it wrote). After a
   topic reset the watermarks are 0, so a new incarnation read from anywhere but its start
   leaves a gap line, never a silent skip;
   Before that gap line, the event-id guard (when the id check is on): the partition's
   event-id state (`event_ids_key`: a hash of tag -> `core.dedupe.IdWindow` bytes, and `#v`,
   its version) must still be at the version the worker decided the batch's duplicates
   from; otherwise the script stores nothing and returns MOVED with the version in force
   (another writer stored this partition meanwhile): the worker reloads the state and
   decides again;
3. INCRs `samples:seq` (only when the batch has samples), XADDs the block with that seq,
   trims the oldest blocks to the retention bounds (see store_script.py), pushes the gaps
   found inside the batch, sets the watermark to last_offset + 1, writes the event-id
   windows the batch changed (HSET, `#v` + 1; HDEL of evicted tags) and HINCRBYs
   `counters`: `events_in`, `samples_out`, `dead_letters`,
   `duplicates_dropped_by_id` (totals and `<name>:<topic>:<partition>`), `dedupe_unchecked`
   (total), so for every partition events_in = samples_out + dead_letters +
   duplicates_dropped_by_id.

Event ids (`core/dedupe.py`): the worker drops re-sent events (same `<tag>:<seq>` at a new
offset: a resumed or re-run ingest, a producer retry) from a batch before encoding its block,
from its cached copy of the partition's event-id state; the version guard above makes the
decision and the state update one atomic step with the sample write, without per-event work in
Lua. The state is per partition because the producer partitions by key (= event id): every copy
of an event lands in the partition of the first (same partition count, key partitioner).

A crash between the script and the Kafka offset commit only causes a replay, which step 2 skips.
The first write of a partition (no watermark yet) is taken as is, without a gap line.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from stages.common import keys
from stages.common.errors import FeaturesError
from stages.common.samples import SourceRange, encode_block
from stages.features.settings import DEFAULT_RETENTION_MB
from stages.features.store_script import WRITE_LUA
from stages.features.core import (
    DedupeConfig,
    FieldStats,
    IdWindow,
    PartitionBatch,
    PartitionIds,
    Verdict,
    dedupe_batch,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis


class WriteStatus(Enum):
    """What the write script did with a partition batch."""

    WRITTEN = 1
    DUPLICATE = 0
    OVERLAP = 2
    STALE = 3
    MOVED = 4


@dataclass(frozen=True)
class WriteOutcome:
    """The script's answer: status, the partition watermark after it, the block seq (0: none),
    the store epoch in force, whether this call reset the topic's watermarks, the
    partition's event-id state version after it (-1: not looked at), and the blocks the
    retention trimmed to make room."""

    status: WriteStatus
    watermark: int
    seq: int
    epoch: str
    reset: bool
    ids_version: int = -1
    trimmed_blocks: int = 0


@dataclass(frozen=True)
class WriteReport:
    """What one `SampleStore.write` stored: the batches actually written (trimmed to the new
    rows), the events skipped as already stored, the events skipped because they came from a
    retired topic incarnation (`stale`), whether the topic's watermarks were reset
    (`topic_reset`), the store epoch the writes saw, the re-sent events dropped by event id
    (`dropped_by_id`, also in each written batch's `dropped_by_id`) and the samples stored
    without an id check (`unchecked_ids`: older than the window, see core/dedupe.py), and the
    oldest blocks the retention trimmed from the stream (`trimmed_blocks`)."""

    written: list[PartitionBatch]
    duplicates: int
    stale: int = 0
    topic_reset: bool = False
    epoch: str = ""
    dropped_by_id: int = 0
    unchecked_ids: int = 0
    trimmed_blocks: int = 0


def event_ids_key(namespace: str, topic: str, partition: int) -> bytes:
    """The Redis hash of one partition's event-id state: `offsets:<topic>:ids:<partition>`
    (under the watermarks' key, so in the same hash slot). Fields: `#v` (the state version)
    and one per source tag (`IdWindow.to_bytes`)."""
    return keys.offsets(namespace, topic) + b":ids:%d" % partition


def stream_index_key(namespace: str) -> bytes:
    """The Redis list indexing the sample stream for retention: `samples:index`."""
    return keys.samples_stream(namespace) + b":index"


def stream_bytes_key(namespace: str) -> bytes:
    """The sample stream's byte total (a string, integer): `samples:bytes`."""
    return keys.samples_stream(namespace) + b":bytes"


class SampleStore:
    """Writes partition batches and statistics snapshots to one namespace of a Redis server.

    Use an `redis.asyncio.Redis` client made with `decode_responses=False`.
    """

    def __init__(
        self,
        client: Redis,
        namespace: str,
        retention_blocks: int,
        epoch_candidate: str | None = None,
        dedupe: DedupeConfig | None = None,
        retention_bytes: int = DEFAULT_RETENTION_MB << 20,
    ) -> None:
        """`epoch_candidate`: the store epoch this writer sets when the store has none
        (default: a new random id). `dedupe`: the event-id check (None or window 0: off).
        `retention_blocks`, `retention_bytes`: the stream's bounds (see store_script.py)."""
        self._client = client
        self._ns = namespace
        self._retention = b"%d" % retention_blocks
        self._retention_bytes = b"%d" % retention_bytes
        self._epoch = (epoch_candidate or uuid.uuid4().hex).encode()
        self._script = client.register_script(WRITE_LUA)
        self._dedupe = dedupe if dedupe is not None and dedupe.window > 0 else None
        # (topic, partition) -> this writer's copy of the partition's event-id state.
        self._ids: dict[tuple[str, int], PartitionIds] = {}

    async def write(self, batches: list[PartitionBatch], topic_id: str = "") -> WriteReport:
        """Store each batch exactly once (one pipelined round trip, one more after an overlap).

        Batches must be of distinct partitions, all fetched under the topic incarnation
        `topic_id` (the Kafka topic id; "" = unknown, no incarnation check). Rows below a
        partition's watermark are never stored twice; the returned `written` batches are the
        rows stored by this call. A new `topic_id` resets the topic's watermarks first (see the
        module docstring); batches of a retired incarnation are skipped (`stale`). Samples
        whose event id was stored before (within the window) are dropped and counted
        (`dropped_by_id`); the first copy of an id is the one stored.
        """
        written: list[PartitionBatch] = []
        duplicates = stale = dropped = unchecked = trims = 0
        reset = False
        epoch = ""
        pending = [(batch, 0) for batch in batches]
        tid = topic_id.encode()
        for _attempt in range(4):
            if not pending:
                break
            await self._load_ids([batch for batch, _ in pending])
            checked = [self._check(batch) for batch, _ in pending]
            calls = [(kept, trim, verdict) for (_, trim), (kept, verdict) in zip(pending, checked)]
            outcomes = await self._run(calls, tid)
            retry = []
            for (batch, trimmed), (kept, verdict), outcome in zip(pending, checked, outcomes):
                reset = reset or outcome.reset
                epoch = outcome.epoch
                if outcome.status is WriteStatus.WRITTEN:
                    written.append(kept)
                    trims += outcome.trimmed_blocks
                    duplicates += trimmed
                    if verdict is not None:
                        dropped += verdict.dropped
                        unchecked += verdict.unchecked
                        self._remember(kept, verdict, outcome.ids_version)
                    continue
                # Another writer stored this partition since our copy of its event-id state
                # (MOVED, and likely after a replay): reload it before deciding again.
                self._ids.pop((batch.topic, batch.partition), None)
                if outcome.status is WriteStatus.MOVED:
                    retry.append((batch, trimmed))
                elif outcome.status is WriteStatus.DUPLICATE:
                    duplicates += batch.events + trimmed
                elif outcome.status is WriteStatus.STALE:
                    stale += batch.events + trimmed
                else:
                    rest = batch.since(outcome.watermark)
                    if rest is None:  # cannot happen: OVERLAP means last >= watermark
                        duplicates += batch.events + trimmed
                    else:
                        retry.append((rest, trimmed + batch.events - rest.events))
            pending = retry
        if pending:
            raise FeaturesError(
                "the offset watermark kept moving under this worker: is a second worker with "
                "another consumer group writing the same namespace? Give each pipeline its own "
                "FRESHREC_REDIS_NAMESPACE"
            )
        if epoch == self._epoch.decode():
            # Ours was adopted: the next store reset must get another id, or it would look
            # like this same incarnation to us.
            self._epoch = uuid.uuid4().hex.encode()
        return WriteReport(written, duplicates, stale, reset, epoch, dropped, unchecked, trims)

    def _check(self, batch: PartitionBatch) -> tuple[PartitionBatch, Verdict | None]:
        """The batch without the samples whose event id was stored (from the cached state)."""
        if self._dedupe is None:
            return batch, None
        state = self._ids[(batch.topic, batch.partition)]
        verdict = dedupe_batch(batch.sample_ids, state, self._dedupe)
        return batch.keep_samples(verdict.keep), verdict

    def _remember(self, batch: PartitionBatch, verdict: Verdict, version: int) -> None:
        key = (batch.topic, batch.partition)
        old = self._ids[key].windows
        windows = {t: w for t, w in old.items() if t not in verdict.evict}
        windows.update(verdict.updates)
        self._ids[key] = PartitionIds(version, windows)

    async def _load_ids(self, batches: list[PartitionBatch]) -> None:
        """Read the event-id state of the partitions not cached (one round trip)."""
        if self._dedupe is None:
            return
        missing = sorted({(b.topic, b.partition) for b in batches} - self._ids.keys())
        if not missing:
            return
        pipe = self._client.pipeline(transaction=False)
        for topic, partition in missing:
            pipe.hgetall(event_ids_key(self._ns, topic, partition))
        replies = await pipe.execute()
        window = self._dedupe.window
        for (topic, partition), stored in zip(missing, replies):
            version = int(stored.pop(b"#v", b"0"))
            try:
                windows = {
                    tag.decode(): IdWindow.from_bytes(blob, window) for tag, blob in stored.items()
                }
            except ValueError as exc:
                raise FeaturesError(
                    f"the event-id state {event_ids_key(self._ns, topic, partition)!r} is "
                    f"damaged ({exc}): delete that key (re-sent events of the last window may "
                    "then be stored twice)"
                ) from exc
            self._ids[(topic, partition)] = PartitionIds(version, windows)

    async def count(self, name: str, amount: int = 1) -> None:
        """Add `amount` to the store counter `name` (events this worker noticed itself)."""
        await self._client.hincrby(keys.counters(self._ns), name, amount)

    async def _run(
        self, batches: list[tuple[PartitionBatch, int, Verdict | None]], topic_id: bytes
    ) -> list[WriteOutcome]:
        pipe = self._client.pipeline(transaction=False)
        for batch, trimmed, verdict in batches:
            args = self._args(batch, trimmed, topic_id, verdict)
            keys_ = self._keys(batch.topic, batch.partition)
            await self._script(keys=keys_, args=args, client=pipe)
        replies = await pipe.execute()
        return [
            WriteOutcome(
                WriteStatus(int(r[0])),
                int(r[1]),
                int(r[2]),
                _text(r[3]),
                bool(int(r[4])),
                int(r[5]),
                int(r[6]),
            )
            for r in replies
        ]

    def _keys(self, topic: str, partition: int) -> list[bytes]:
        ns = self._ns
        return [
            keys.offsets(ns, topic),
            keys.samples_seq(ns),
            keys.samples_stream(ns),
            keys.gaps(ns),
            keys.counters(ns),
            keys.store_epoch(ns),
            event_ids_key(ns, topic, partition),
            stream_index_key(ns),
            stream_bytes_key(ns),
        ]

    def _id_args(self, batch: PartitionBatch, verdict: Verdict | None) -> list[Any]:
        """ARGV[20..]: expected state version ('' = no id check), dropped, unchecked, the gap
        count, the window count, the block's schema hash; then the gaps, the (tag, window)
        pairs, the evicted tags."""
        gaps = [gap.to_json() for gap in batch.gaps]
        schema = batch.schema_hash.encode()
        if verdict is None:
            return [b"", b"0", b"0", b"%d" % len(gaps), b"0", schema, *gaps]
        version = self._ids[(batch.topic, batch.partition)].version
        pairs = [x for tag, w in verdict.updates.items() for x in (tag.encode(), w.to_bytes())]
        return [
            b"%d" % version,
            b"%d" % verdict.dropped,
            b"%d" % verdict.unchecked,
            b"%d" % len(gaps),
            b"%d" % len(verdict.updates),
            schema,
            *gaps,
            *pairs,
            *[tag.encode() for tag in verdict.evict],
        ]

    def _args(
        self, batch: PartitionBatch, trimmed: int, topic_id: bytes, verdict: Verdict | None
    ) -> list[Any]:
        source = SourceRange(batch.topic, batch.partition, batch.first_offset, batch.last_offset)
        block = encode_block(batch.samples, source, batch.schema_hash)
        return [
            b"%d" % batch.partition,
            b"%d" % batch.first_offset,
            b"%d" % batch.last_offset,
            b"%d" % batch.events,
            block[b"n"],
            b"%d" % len(batch.dead_letters),
            self._retention,
            block[b"v"],
            block[b"src"],
            block[b"label"],
            block[b"dense"],
            block[b"ids"],
            block[b"ts"],
            batch.topic.encode(),
            b"%d" % (batch.last_offset + 1),
            b"%d" % trimmed,
            topic_id,
            self._epoch,
            self._retention_bytes,
            *self._id_args(batch, verdict),
        ]

    async def merge_stats(self, delta: FieldStats) -> int:
        """Merge `delta` into the `stats` hash and bump `stats:version`; returns the version.

        Optimistic transaction (WATCH/MULTI), retried when another worker wrote in between, so
        concurrent workers never lose each other's statistics.
        """
        from redis.exceptions import WatchError

        stats_key, version_key = keys.stats(self._ns), keys.stats_version(self._ns)
        for _attempt in range(50):
            async with self._client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(stats_key, version_key)
                    stored: Any = await pipe.hgetall(stats_key)
                    current = FieldStats.from_hash(stored, delta.fields)
                    version = int(await pipe.get(version_key) or 0) + 1
                    pipe.multi()
                    fields: dict[Any, Any] = current.merge(delta).to_hash(version)
                    pipe.hset(stats_key, mapping=fields)
                    pipe.set(version_key, version)
                    await pipe.execute()
                    return version
                except WatchError:
                    continue
        raise FeaturesError(
            "statistics snapshot kept conflicting with other writers (50 tries): too many "
            "workers on one namespace, or raise FRESHREC_FEATURES_STATS_INTERVAL_S"
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
