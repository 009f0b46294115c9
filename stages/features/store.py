"""The Redis adapter of the features stage: exactly-once sample writes and statistics snapshots.

Exactly once without Kafka transactions: each (partition, micro-batch) is written by ONE Lua
script (EVALSHA) that, atomically,

1. reads the partition's watermark (next offset to store) from `offsets:<topic>` (keys.py);
2. last_offset < watermark: a replay -> stores nothing, adds the events to
   `duplicates_skipped`, returns DUPLICATE;
   first_offset < watermark <= last_offset: a partial replay -> stores nothing, returns
   OVERLAP with the watermark; the caller drops the stored rows (`PartitionBatch.since`) and
   calls again, passing how many it dropped (added to `duplicates_skipped` on success);
   first_offset > watermark: offsets went missing -> a line in `gaps`, then goes on (an
   `OffsetGapRecord` of stages/common/gaps.py, schema version 1: the script builds the same
   fields as `OffsetGapRecord.to_json`, and the integration tests parse what it wrote);
3. INCRs `samples:seq` (only when the batch has samples), XADDs the block with that seq
   (`MAXLEN ~ retention`), pushes the gaps found inside the batch, sets the watermark to
   last_offset + 1 and HINCRBYs `counters`: `events_in`, `samples_out`, `dead_letters`
   (totals and `<name>:<topic>:<partition>`), so for every partition events_in = samples_out + dead_letters.

A crash between the script and the Kafka offset commit only causes a replay, which step 2 skips.
The first write of a partition (no watermark yet) is taken as is, without a gap line.
"""

from __future__ import annotations

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
    return {0, wm, 0}
  end
  if first < wm then
    return {2, wm, 0}
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
for i = 17, #ARGV do
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
return {1, last + 1, seq}
"""


class WriteStatus(Enum):
    """What the write script did with a partition batch."""

    WRITTEN = 1
    DUPLICATE = 0
    OVERLAP = 2


@dataclass(frozen=True)
class WriteOutcome:
    """The script's answer: status, the partition watermark after it, the block seq (0: none)."""

    status: WriteStatus
    watermark: int
    seq: int


@dataclass(frozen=True)
class WriteReport:
    """What one `SampleStore.write` stored: the batches actually written (trimmed to the new
    rows) and the events skipped as already stored."""

    written: list[PartitionBatch]
    duplicates: int


class SampleStore:
    """Writes partition batches and statistics snapshots to one namespace of a Redis server.

    Use an `redis.asyncio.Redis` client made with `decode_responses=False`.
    """

    def __init__(self, client: Redis, namespace: str, retention_blocks: int) -> None:
        self._client = client
        self._ns = namespace
        self._retention = b"%d" % retention_blocks
        self._script = client.register_script(_WRITE_LUA)

    async def write(self, batches: list[PartitionBatch]) -> WriteReport:
        """Store each batch exactly once (one pipelined round trip, one more after an overlap).

        Batches must be of distinct partitions. Rows below a partition's watermark are never
        stored twice; the returned `written` batches are the rows stored by this call.
        """
        written: list[PartitionBatch] = []
        duplicates = 0
        pending = [(batch, 0) for batch in batches]
        for _attempt in range(3):
            if not pending:
                break
            outcomes = await self._run(pending)
            retry = []
            for (batch, trimmed), outcome in zip(pending, outcomes):
                if outcome.status is WriteStatus.WRITTEN:
                    written.append(batch)
                    duplicates += trimmed
                elif outcome.status is WriteStatus.DUPLICATE:
                    duplicates += batch.events + trimmed
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
        return WriteReport(written, duplicates)

    async def _run(self, batches: list[tuple[PartitionBatch, int]]) -> list[WriteOutcome]:
        pipe = self._client.pipeline(transaction=False)
        for batch, trimmed in batches:
            args = self._args(batch, trimmed)
            await self._script(keys=self._keys(batch.topic), args=args, client=pipe)
        replies = await pipe.execute()
        return [WriteOutcome(WriteStatus(int(r[0])), int(r[1]), int(r[2])) for r in replies]

    def _keys(self, topic: str) -> list[bytes]:
        ns = self._ns
        return [
            keys.offsets(ns, topic),
            keys.samples_seq(ns),
            keys.samples_stream(ns),
            keys.gaps(ns),
            keys.counters(ns),
        ]

    def _args(self, batch: PartitionBatch, trimmed: int) -> list[Any]:
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

