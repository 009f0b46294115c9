"""The write script's topic incarnations and store epoch, on a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis

from stages.common import keys
from stages.common.gaps import OffsetGapRecord, TopicResetRecord
from stages.features.readback import read_counters, read_gaps, read_watermarks
from stages.features.store import SampleStore, WriteReport

from .conftest import Services
from .test_features_store import _batch

pytestmark = pytest.mark.integration


async def _writes(url: str, ns: str, steps: list[tuple[range, str]]) -> list[WriteReport]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        store = SampleStore(client, ns, retention_blocks=1000, epoch_candidate="e1")
        return [await store.write([_batch(offsets)], topic_id) for offsets, topic_id in steps]
    finally:
        await client.aclose()


def test_a_new_topic_id_resets_the_watermarks_and_an_old_one_is_stale(
    services: Services, unique: str
) -> None:
    ns = f"inc{unique}"
    reports = asyncio.run(_writes(services.redis, ns, [
        (range(0, 50), "A"),  # first incarnation
        (range(0, 20), "B"),  # recreated topic: offsets start over, stored (not duplicates)
        (range(50, 60), "A"),  # a late batch of the retired incarnation: not stored
        (range(30, 40), "B"),  # 20..29 never arrived: a gap line, counted
    ]))
    assert [sum(b.events for b in r.written) for r in reports] == [50, 20, 0, 10]
    assert [(r.topic_reset, r.stale, r.duplicates) for r in reports] == [
        (False, 0, 0), (True, 0, 0), (False, 10, 0), (False, 0, 0)
    ]
    assert {r.epoch for r in reports} == {"e1"}
    client = redis.Redis.from_url(services.redis)
    counters = read_counters(client, ns)
    assert counters["topic_resets"] == 1 and counters["stale_skipped"] == 10
    assert counters["events_in"] == 80 and counters.get("duplicates_skipped", 0) == 0
    reset, gap = read_gaps(client, ns)
    assert isinstance(reset, TopicResetRecord) and (reset.old_topic_id, reset.new_topic_id) == (
        "A", "B"
    )
    assert (reset.partitions, reset.stored_offsets, reset.topic) == (1, 50, "ev")
    assert gap == OffsetGapRecord(topic="ev", partition=0, expected=20, got=30)
    assert read_watermarks(client, ns, "ev") == {0: 40}
    assert client.hget(keys.offsets(ns, "ev"), "topic_id") == b"B"
    client.close()


def test_the_epoch_is_set_once_and_a_store_that_lost_it_gets_a_new_one(
    services: Services, unique: str
) -> None:
    ns = f"ep{unique}"
    first = asyncio.run(_writes(services.redis, ns, [(range(0, 10), "A")]))
    client = redis.Redis.from_url(services.redis)
    assert first[0].epoch == "e1" and client.get(keys.store_epoch(ns)) == b"e1"
    client.set(keys.store_epoch(ns), b"trainer-made")
    again = asyncio.run(_writes(services.redis, ns, [(range(10, 20), "A")]))
    assert again[0].epoch == "trainer-made"  # SET NX: an existing epoch is kept
    client.delete(*client.keys(f"freshrec:v1:{{{ns}}}:*".encode()))  # the store lost its data
    lost = asyncio.run(_writes(services.redis, ns, [(range(20, 30), "A")]))
    assert lost[0].epoch == "e1" and not lost[0].topic_reset
    assert sum(b.events for b in lost[0].written) == 10
    client.close()
