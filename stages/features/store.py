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
3. INCRs `samples:seq` (only when the batch has samples), XADDs the block with that seq
   (`MAXLEN ~ retention`), pushes the gaps found inside the batch, sets the watermark to
   last_offset + 1 and HINCRBYs `counters`: `events_in`, `samples_out`, `dead_letters`
   (totals and `<name>:<topic>:<partition>`), so for every partition events_in = samples_out + dead_letters.

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
from stages.features.core import FieldStats, PartitionBatch

if TYPE_CHECKING:
    from redis.asyncio import Redis

_WRITE_LUA = """
redis.call('SET', KEYS[6], ARGV[18], 'NX')
local epoch = redis.call('GET', KEYS[6])
local tid = ARGV[17]
local reset = 0
if tid ~= '' then
  local known = redis.call('HGET', KEYS[1], 'topic_id')
  if known and known ~= tid then
    if redis.call('HEXISTS', KEYS[1], 'retired:' .. tid) == 1 then
      redis.call('HINCRBY', KEYS[5], 'stale_skipped', tonumber(ARGV[4]))
      return {3, 0, 0, epoch, 0}
    end
    local all = redis.call('HGETALL', KEYS[1])
    local parts, stored = {}, 0
    for i = 1, #all, 2 do
      if string.match(all[i], '^%d+$') then
        parts[#parts + 1] = all[i]
        stored = stored + tonumber(all[i + 1])
      end
    end
    for _, p in ipairs(parts) do
      redis.call('HSET', KEYS[1], p, '0')
    end
    redis.call('HSET', KEYS[1], 'retired:' .. known, '1')
    local now = redis.call('TIME')
    redis.call('RPUSH', KEYS[4], cjson.encode({schema_version=1, stage='features',
      kind='topic_reset', topic=ARGV[14], old_topic_id=known, new_topic_id=tid,
      partitions=#parts, stored_offsets=stored,
      time_ms=tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)}))
    redis.call('HINCRBY', KEYS[5], 'gaps', 1)
    redis.call('HINCRBY', KEYS[5], 'topic_resets', 1)
    redis.call('HINCRBY', KEYS[5], 'topic_resets:' .. ARGV[14], 1)
    reset = 1
  end
  if known ~= tid then
    redis.call('HSET', KEYS[1], 'topic_id', tid)
  end
end
local wm = redis.call('HGET', KEYS[1], ARGV[1])
local first = tonumber(ARGV[2])
local last = tonumber(ARGV[3])
local events = tonumber(ARGV[4])
local tp = ARGV[14] .. ':' .. ARGV[1]
if wm then
  wm = tonumber(wm)
  if last < wm then
    redis.call('HINCRBY', KEYS[5], 'duplicates_skipped', events)
    redis.call('HINCRBY', KEYS[5], 'duplicates_skipped:' .. tp, events)
    return {0, wm, 0, epoch, reset}
  end
  if first < wm then
    return {2, wm, 0, epoch, reset}
  end
  if first > wm then
    redis.call('RPUSH', KEYS[4], cjson.encode({schema_version=1, stage='features',
      kind='offset_gap', topic=ARGV[14], partition=tonumber(ARGV[1]), expected=wm, got=first}))
    redis.call('HINCRBY', KEYS[5], 'gaps', 1)
  end
end
local seq = 0
local n = tonumber(ARGV[5])
if n > 0 then
  seq = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'v', ARGV[8], 'seq', tostring(seq),
    'n', ARGV[5], 'src', ARGV[9], 'label', ARGV[10], 'dense', ARGV[11], 'ids', ARGV[12],
    'ts', ARGV[13])
end
for i = 19, #ARGV do
  redis.call('RPUSH', KEYS[4], ARGV[i])
  redis.call('HINCRBY', KEYS[5], 'gaps', 1)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[15])
if ARGV[16] ~= '0' then
  redis.call('HINCRBY', KEYS[5], 'duplicates_skipped', tonumber(ARGV[16]))
  redis.call('HINCRBY', KEYS[5], 'duplicates_skipped:' .. tp, tonumber(ARGV[16]))
end
redis.call('HINCRBY', KEYS[5], 'events_in', events)
redis.call('HINCRBY', KEYS[5], 'samples_out', n)
redis.call('HINCRBY', KEYS[5], 'dead_letters', tonumber(ARGV[6]))
redis.call('HINCRBY', KEYS[5], 'events_in:' .. tp, events)
redis.call('HINCRBY', KEYS[5], 'samples_out:' .. tp, n)
redis.call('HINCRBY', KEYS[5], 'dead_letters:' .. tp, tonumber(ARGV[6]))
return {1, last + 1, seq, epoch, reset}
"""


class WriteStatus(Enum):
    """What the write script did with a partition batch."""

    WRITTEN = 1
    DUPLICATE = 0
    OVERLAP = 2
    STALE = 3


@dataclass(frozen=True)
class WriteOutcome:
    """The script's answer: status, the partition watermark after it, the block seq (0: none),
    the store epoch in force, and whether this call reset the topic's watermarks."""

    status: WriteStatus
    watermark: int
    seq: int
    epoch: str
    reset: bool


@dataclass(frozen=True)
class WriteReport:
    """What one `SampleStore.write` stored: the batches actually written (trimmed to the new
    rows), the events skipped as already stored, the events skipped because they came from a
    retired topic incarnation (`stale`), whether the topic's watermarks were reset
    (`topic_reset`), and the store epoch the writes saw."""

    written: list[PartitionBatch]
    duplicates: int
    stale: int = 0
    topic_reset: bool = False
    epoch: str = ""


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
    ) -> None:
        """`epoch_candidate`: the store epoch this writer sets when the store has none
        (default: a new random id)."""
        self._client = client
        self._ns = namespace
        self._retention = b"%d" % retention_blocks
        self._epoch = (epoch_candidate or uuid.uuid4().hex).encode()
        self._script = client.register_script(_WRITE_LUA)

    async def write(self, batches: list[PartitionBatch], topic_id: str = "") -> WriteReport:
        """Store each batch exactly once (one pipelined round trip, one more after an overlap).

        Batches must be of distinct partitions, all fetched under the topic incarnation
        `topic_id` (the Kafka topic id; "" = unknown, no incarnation check). Rows below a
        partition's watermark are never stored twice; the returned `written` batches are the
        rows stored by this call. A new `topic_id` resets the topic's watermarks first (see the
        module docstring); batches of a retired incarnation are skipped (`stale`).
        """
        written: list[PartitionBatch] = []
        duplicates = stale = 0
        reset = False
        epoch = ""
        pending = [(batch, 0) for batch in batches]
        tid = topic_id.encode()
        for _attempt in range(3):
            if not pending:
                break
            outcomes = await self._run(pending, tid)
            retry = []
            for (batch, trimmed), outcome in zip(pending, outcomes):
                reset = reset or outcome.reset
                epoch = outcome.epoch
                if outcome.status is WriteStatus.WRITTEN:
                    written.append(batch)
                    duplicates += trimmed
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
        return WriteReport(written, duplicates, stale, reset, epoch)

    async def count(self, name: str, amount: int = 1) -> None:
        """Add `amount` to the store counter `name` (events this worker noticed itself)."""
        await self._client.hincrby(keys.counters(self._ns), name, amount)

    async def _run(
        self, batches: list[tuple[PartitionBatch, int]], topic_id: bytes
    ) -> list[WriteOutcome]:
        pipe = self._client.pipeline(transaction=False)
        for batch, trimmed in batches:
            args = self._args(batch, trimmed, topic_id)
            await self._script(keys=self._keys(batch.topic), args=args, client=pipe)
        replies = await pipe.execute()
        return [
            WriteOutcome(
                WriteStatus(int(r[0])), int(r[1]), int(r[2]), _text(r[3]), bool(int(r[4]))
            )
            for r in replies
        ]

    def _keys(self, topic: str) -> list[bytes]:
        ns = self._ns
        return [
            keys.offsets(ns, topic),
            keys.samples_seq(ns),
            keys.samples_stream(ns),
            keys.gaps(ns),
            keys.counters(ns),
            keys.store_epoch(ns),
        ]

    def _args(self, batch: PartitionBatch, trimmed: int, topic_id: bytes) -> list[Any]:
        source = SourceRange(batch.topic, batch.partition, batch.first_offset, batch.last_offset)
        block = encode_block(batch.samples, source)
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
            *[gap.to_json() for gap in batch.gaps],
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
                    current = FieldStats.from_hash(stored)
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
