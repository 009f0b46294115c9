"""The sample stream's retention by bytes, on a real Redis: blocks that grow (a lagging worker)
stay under the byte budget, and the trainer's reader reports exactly the blocks trimmed."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import numpy as np
import pytest
import redis

from stages.common import keys
from stages.common.gaps import TrimmedBlocksRecord
from stages.features.core import PartitionBatch, RecordBatch, split_batch
from stages.features.readback import read_blocks, read_counters, read_gaps
from stages.features.store import SampleStore, stream_bytes_key, stream_index_key
from stages.train.core.positions import SeqGap, StorePosition, advance
from stages.train.store import SampleReader

from .conftest import Services
from .test_features_store import synthetic_events

pytestmark = pytest.mark.integration

BUDGET = 1 << 20  # 1 MiB
GROWTH = 20  # block k holds 20 * k rows: ~5 KB .. ~215 KB
BLOCKS = 40  # 16,400 rows, ~4.4 MB written in all
ROWS = GROWTH * BLOCKS * (BLOCKS + 1) // 2


@functools.cache
def _events() -> list[bytes]:
    return synthetic_events(ROWS)


def _batch(first: int, rows: int) -> PartitionBatch:
    records = RecordBatch(
        "ev", np.zeros(rows, np.int32), np.arange(first, first + rows, dtype=np.int64),
        [None] * rows, _events()[first:first + rows],
    )
    (batch,) = split_batch(records).batches
    return batch


def _payload(client: redis.Redis, ns: str) -> int:
    """The field values' bytes of every entry in the stream (what the budget counts)."""
    entries: list[tuple[bytes, dict[bytes, bytes]]]
    entries = client.xrange(keys.samples_stream(ns))  # type: ignore[assignment]
    return sum(len(v) for _, fields in entries for v in fields.values())


async def _write_growing(
    url: str,
    ns: str,
    after_each: Callable[[int, int], None],
    retention_blocks: int = 100_000,
    retention_bytes: int = BUDGET,
) -> int:
    """Write BLOCKS blocks of growing size; `after_each(k, trimmed)` after write k (1-based).
    Returns the blocks the store reported as trimmed."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    trimmed, first = 0, 0
    try:
        store = SampleStore(client, ns, retention_blocks, retention_bytes=retention_bytes)
        for k in range(1, BLOCKS + 1):
            report = await store.write([_batch(first, GROWTH * k)])
            first += GROWTH * k
            trimmed += report.trimmed_blocks
            after_each(k, trimmed)
    finally:
        await client.aclose()
    return trimmed


def test_growing_blocks_stay_under_the_byte_budget_and_the_reader_reports_the_trim(
    services: Services, unique: str
) -> None:
    ns = f"rb{unique}"
    client = redis.Redis.from_url(services.redis)
    stream = keys.samples_stream(ns)
    reader = SampleReader(client, ns)
    early: list[StorePosition] = []
    peak = [0, 0]  # the stream's MEMORY USAGE and payload at their highest

    def check(k: int, trimmed: int) -> None:
        memory = int(client.memory_usage(stream, samples=0) or 0)
        payload = _payload(client, ns)
        peak[0], peak[1] = max(peak[0], memory), max(peak[1], payload)
        assert payload <= BUDGET, f"block {k}: {payload} bytes kept, budget {BUDGET}"
        assert memory <= 1.1 * BUDGET, f"block {k}: MEMORY USAGE {memory}, budget {BUDGET}"
        assert int(client.get(stream_bytes_key(ns)) or 0) == payload
        assert client.llen(stream_index_key(ns)) == client.xlen(stream) == k - trimmed
        if k == 5:  # a trainer that read the first five blocks, then fell behind
            early.append(advance(StorePosition(), reader.read(StorePosition(), 100, 0)).position)

    trimmed = asyncio.run(_write_growing(services.redis, ns, check))
    blocks = read_blocks(client, ns)
    first_kept = blocks[0].seq
    counters = read_counters(client, ns)
    print(f"byte retention: {BLOCKS} blocks, {counters['samples_out']} samples written "
          f"({ROWS * 269 / 2**20:.1f} MiB of rows); kept "
          f"{len(blocks)} blocks, peak payload {peak[1]} B, peak MEMORY USAGE {peak[0]} B, "
          f"budget {BUDGET} B")
    assert trimmed > 0 and first_kept == trimmed + 1 and blocks[-1].seq == BLOCKS
    assert [b.seq for b in blocks] == list(range(first_kept, BLOCKS + 1))
    assert counters["retention_trimmed_blocks"] == trimmed
    kept_rows = sum(len(b.samples) for b in blocks)
    assert counters["retention_trimmed_samples"] == counters["samples_out"] - kept_rows

    # The trainer's reader, from where it stopped, sees exactly the trimmed seqs as a gap.
    (position,) = early
    assert position.seq == 5
    step = advance(position, reader.read(position, 1000, 0))
    assert step.gaps == [SeqGap(6, trimmed)]
    assert [b.seq for b in step.blocks] == list(range(first_kept, BLOCKS + 1))
    reader.report_gaps(step.gaps, "retention-test")
    (record,) = read_gaps(client, ns)
    assert isinstance(record, TrimmedBlocksRecord)
    assert (record.first_seq, record.last_seq, record.blocks) == (6, trimmed, trimmed - 5)
    client.close()


def test_the_block_cap_still_holds_and_the_newest_block_always_stays(
    services: Services, unique: str
) -> None:
    capped, tiny = f"rc{unique}", f"rt{unique}"
    client = redis.Redis.from_url(services.redis)

    def capped_check(k: int, trimmed: int) -> None:
        assert client.xlen(keys.samples_stream(capped)) == min(k, 10)

    asyncio.run(_write_growing(services.redis, capped, capped_check, 10, retention_bytes=1 << 30))
    assert [b.seq for b in read_blocks(client, capped)] == list(range(BLOCKS - 9, BLOCKS + 1))

    async def one_over_budget() -> None:
        from redis.asyncio import Redis

        aclient = Redis.from_url(services.redis)
        try:
            store = SampleStore(aclient, tiny, 100, retention_bytes=1000)
            for first in (0, 50, 100):  # each block (~13 KB) is over the budget alone
                await store.write([_batch(first, 50)])
        finally:
            await aclient.aclose()

    asyncio.run(one_over_budget())
    assert [b.seq for b in read_blocks(client, tiny)] == [3]
    assert read_counters(client, tiny)["retention_trimmed_blocks"] == 2
    assert int(client.get(stream_bytes_key(tiny)) or 0) == _payload(client, tiny)
    client.close()
