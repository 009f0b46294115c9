"""The atomic write script on a real redis-server: replays skipped, overlaps trimmed, gaps
reported, counters balanced, statistics merged."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis

from stages.common.gaps import OffsetGapRecord
from stages.features.core import PartitionBatch, RecordBatch, default_codec, split_batch
from stages.common.events import encode_event
from stages.features.readback import (
    read_blocks,
    read_counters,
    read_gaps,
    read_stats,
    read_watermarks,
)
from stages.features.store import SampleStore

from .conftest import Services

pytestmark = pytest.mark.integration


def synthetic_events(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        dense = [b"%d" % v for v in rng.integers(0, 100, 13)]
        cats = [b"%08x" % v for v in rng.integers(0, 50, 26)]
        out.append(encode_event(f"st:{i}", i, b"\t".join([b"%d" % (i % 2), *dense, *cats])))
    return out


def _batch(offsets: range, bad: frozenset[int] = frozenset()) -> PartitionBatch:
    values = synthetic_events(200)
    vals = [b"bad" if o in bad else values[o] for o in offsets]
    records = RecordBatch(
        "ev", np.zeros(len(vals), np.int32), np.asarray(list(offsets), np.int64),
        [None] * len(vals), vals,
    )
    (batch,) = split_batch(records).batches
    return batch


async def _scenario(url: str, ns: str) -> list[tuple[int, int]]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        store = SampleStore(client, ns, retention_blocks=1000)
        out = []
        for batch in (
            _batch(range(0, 50), bad=frozenset({7})),  # first write of the partition
            _batch(range(0, 50)),  # exact replay
            _batch(range(30, 80)),  # partial replay: 30..49 stored already
            _batch(range(90, 100)),  # offsets 80..89 never arrived
        ):
            report = await store.write([batch])
            out.append((sum(b.events for b in report.written), report.duplicates))
        for part in (_batch(range(0, 10)), _batch(range(10, 20))):
            await store.merge_stats(default_codec().stats(part.raw, part.samples.ids))
        return out
    finally:
        await client.aclose()


def test_write_script_skips_replays_trims_overlaps_and_reports_gaps(
    services: Services, unique: str
) -> None:
    ns = f"s{unique}"
    outcomes = asyncio.run(_scenario(services.redis, ns))
    assert outcomes == [(50, 0), (0, 50), (30, 20), (10, 0)]
    client = redis.Redis.from_url(services.redis)
    counters = read_counters(client, ns)
    assert counters["events_in"] == 90 and counters["dead_letters"] == 1
    assert counters["samples_out"] == 89 and counters["duplicates_skipped"] == 70
    assert counters["events_in:ev:0"] == counters["samples_out:ev:0"] + counters["dead_letters:ev:0"]
    assert read_watermarks(client, ns, "ev") == {0: 100}
    # written by the Lua script, parsed with the shared contract
    assert read_gaps(client, ns) == [
        OffsetGapRecord(topic="ev", partition=0, expected=80, got=90)
    ]
    blocks = read_blocks(client, ns)
    assert [b.seq for b in blocks] == [1, 2, 3]
    assert [(b.source.first_offset, b.source.last_offset) for b in blocks] == [(0, 49), (50, 79), (90, 99)]
    version, stats = read_stats(client, ns)
    assert version == 2 and stats.rows == 20


async def _many_blocks(url: str, ns: str, blocks: int) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        store = SampleStore(client, ns, retention_blocks=10)
        for k in range(blocks):
            await store.write([_batch(range(k, k + 1))])
    finally:
        await client.aclose()


def test_retention_bounds_the_stream_and_readers_see_the_jump(
    services: Services, unique: str
) -> None:
    ns = f"r{unique}"
    asyncio.run(_many_blocks(services.redis, ns, 200))
    client = redis.Redis.from_url(services.redis)
    blocks = read_blocks(client, ns)
    # MAXLEN ~ trims whole stream nodes (100 entries by default), so "about" 10.
    assert len(blocks) < 200 and blocks[-1].seq == 200
    assert blocks[0].seq > 1, "the first blocks were trimmed: seq no longer starts at 1"
    assert read_counters(client, ns)["samples_out"] == 200
