"""One feature schema per store, on a real redis-server: the features worker claims the store for
its schema and stops on another one, and the trainer's reader refuses blocks of another schema
(the features -> train seam, with the real writer's blocks)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis

from stages.common import keys
from stages.common.layout import compile_layout
from stages.common.samples import BlockLayout, SampleBatch, SourceRange, encode_block
from stages.common.schema import SchemaError, load_schema
from stages.common.settings import CommonSettings
from stages.features.core import RecordBatch, SchemaCodec, split_batch
from stages.features.pipeline import FeaturesRuntime
from stages.features.readback import read_blocks
from stages.features.settings import FeaturesSettings
from stages.features.store import SampleStore
from stages.features.store_schema import claim_store_schema, schema_key
from stages.train.core.positions import StorePosition
from stages.train.store import SampleReader

from .conftest import Services
from .test_features_store import synthetic_events

pytestmark = pytest.mark.integration

CRITEO, SHOP = load_schema("criteo"), load_schema("ecommerce")


def _claim(url: str, ns: str, schema_name: str) -> bool:
    from redis.asyncio import Redis

    async def run() -> bool:
        client = Redis.from_url(url)
        try:
            return await claim_store_schema(client, ns, load_schema(schema_name))
        finally:
            await client.aclose()

    return asyncio.run(run())


def _write_criteo_block(url: str, ns: str) -> None:
    """One block of Criteo events through the real core and write script."""
    from redis.asyncio import Redis

    values = synthetic_events(20)
    records = RecordBatch(
        "ev", np.zeros(20, np.int32), np.arange(20, dtype=np.int64), [None] * 20, values
    )
    (batch,) = split_batch(records, SchemaCodec.for_schema(CRITEO)).batches
    assert batch.schema_hash == CRITEO.schema_hash and len(batch.samples) == 20

    async def run() -> None:
        client = Redis.from_url(url)
        try:
            await SampleStore(client, ns, retention_blocks=100).write([batch])
        finally:
            await client.aclose()

    asyncio.run(run())


def test_the_first_worker_claims_the_store_and_another_schema_is_refused(
    services: Services, unique: str
) -> None:
    ns = f"sc{unique}"
    assert _claim(services.redis, ns, "criteo") is True
    assert _claim(services.redis, ns, "criteo") is False  # a restart of the same schema
    client = redis.Redis.from_url(services.redis)
    assert client.get(schema_key(ns)) == CRITEO.schema_hash.encode()
    with pytest.raises(SchemaError) as err:
        _claim(services.redis, ns, "ecommerce")
    message = str(err.value)
    assert CRITEO.schema_hash in message and SHOP.schema_id in message
    assert "FRESHREC_SCHEMA" in message and "\n" not in message


def test_a_store_that_lost_its_key_still_refuses_by_its_blocks(
    services: Services, unique: str
) -> None:
    ns = f"sk{unique}"
    _write_criteo_block(services.redis, ns)
    client = redis.Redis.from_url(services.redis)
    client.delete(schema_key(ns))  # e.g. a store written before the key existed
    with pytest.raises(SchemaError, match=CRITEO.schema_hash):
        _claim(services.redis, ns, "ecommerce")
    assert _claim(services.redis, ns, "criteo") is True


def test_blocks_made_before_schemas_are_refused(services: Services, unique: str) -> None:
    ns = f"s1{unique}"
    fields = encode_block(
        SampleBatch.empty(13, 26), SourceRange("ev", 0, 0, 0), CRITEO.schema_hash, seq=1
    )
    version_1 = {**{k: v for k, v in fields.items() if k != b"schema"}, b"v": b"1"}
    redis.Redis.from_url(services.redis).xadd(keys.samples_stream(ns), version_1)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="version 1"):
        _claim(services.redis, ns, "criteo")


def test_the_worker_stops_at_start_on_a_store_of_another_schema(
    services: Services, unique: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    ns = f"sw{unique}"
    assert _claim(services.redis, ns, "criteo")
    common = CommonSettings(
        redis_url=services.redis, redis_namespace=ns, state_dir=tmp_path,
        feature_schema="ecommerce",
    )
    runtime = FeaturesRuntime(common, FeaturesSettings(group=f"g{unique}"))
    assert runtime.codec.schema_hash == SHOP.schema_hash
    with pytest.raises(SchemaError, match="this stage runs ecommerce@"):
        asyncio.run(runtime.start())


def test_the_trainer_refuses_blocks_of_another_schema(services: Services, unique: str) -> None:
    ns = f"st{unique}"
    _write_criteo_block(services.redis, ns)
    client = redis.Redis.from_url(services.redis)
    # The features stage's blocks read by a trainer of the same schema ...
    same = SampleReader(client, ns, compile_layout(CRITEO, 16))
    ((_, block),) = same.read(StorePosition("0-0", 0, None), 10, 0)
    assert block.schema_hash == CRITEO.schema_hash and block.samples.ids.shape == (20, 26)
    # ... and by a trainer of another schema: it stops, naming both.
    other = SampleReader(client, ns, compile_layout(SHOP, 16))
    with pytest.raises(SchemaError) as err:
        other.read(StorePosition("0-0", 0, None), 10, 0)
    assert CRITEO.schema_hash in str(err.value) and SHOP.schema_hash in str(err.value)
    with pytest.raises(SchemaError):
        read_blocks(client, ns, expected=BlockLayout.for_schema(SHOP))
    assert read_blocks(client, ns)[0].schema_hash == CRITEO.schema_hash


def test_status_reads_the_store_schema(services: Services, unique: str) -> None:
    from stages.features.readback import read_store_schema

    ns = f"ss{unique}"
    client = redis.Redis.from_url(services.redis)
    assert read_store_schema(client, ns) is None
    _claim(services.redis, ns, "ecommerce")
    assert read_store_schema(client, ns) == SHOP.schema_hash


def _shop_events(n: int) -> list[bytes]:
    """`n` JSON click events of the ecommerce preset (some fields missing, one list empty)."""
    import json

    from stages.common.events import encode_event

    out = []
    for i in range(n):
        event = {
            "event_id": f"web-1:{i}", "ts": 1_764_979_200_000 + i, "click": i % 3 == 0,
            "user": {"id": f"u{i % 7}", "recent_items": [f"i{j}" for j in range(i % 6)]},
            "item": {"id": f"i{i % 11}", "category": ["shoes", "hats"][i % 2], "price": 9.5 * i},
            "device": "mobile" if i % 4 else None, "hour": i % 24,
        }
        if i % 5 == 0:
            del event["hour"]
        row = json.dumps(event).encode()
        out.append(encode_event(f"web-1:{i}", 1_764_979_200_000 + i, row, SHOP.schema_hash))
    return out


def test_ecommerce_events_go_through_the_store_to_a_trainer_of_that_schema(
    services: Services, unique: str
) -> None:
    from redis.asyncio import Redis

    ns = f"se{unique}"
    codec = SchemaCodec.for_schema(SHOP)
    values = _shop_events(30)
    records = RecordBatch(
        "ev", np.zeros(30, np.int32), np.arange(30, dtype=np.int64), [None] * 30, values
    )
    (batch,) = split_batch(records, codec).batches
    assert batch.dead_letters == [] and len(batch.samples) == 30
    assert batch.samples.ids.shape == (30, codec.layout.n_slots)

    async def run() -> None:
        client = Redis.from_url(services.redis)
        try:
            assert await claim_store_schema(client, ns, SHOP)
            store = SampleStore(client, ns, retention_blocks=100)
            await store.write([batch])
            await store.merge_stats(codec.stats(batch.raw, batch.samples.ids))
        finally:
            await client.aclose()

    asyncio.run(run())
    client = redis.Redis.from_url(services.redis)
    reader = SampleReader(client, ns, compile_layout(SHOP, 16))
    ((_, block),) = reader.read(StorePosition("0-0", 0, None), 10, 0)
    assert block.schema_hash == SHOP.schema_hash
    assert np.array_equal(block.samples.ids, batch.samples.ids)
    assert np.array_equal(block.samples.dense, batch.samples.dense)
    assert block.samples.label.tolist() == [int(i % 3 == 0) for i in range(30)]
    from stages.features.readback import read_stats

    version, stats = read_stats(client, ns, codec.stats_fields)
    assert version == 1 and stats.rows == 30
    assert stats.cat_missing[codec.stats_fields.sketched.index("device")] == 8
    assert stats.multi_values.tolist() == [sum(i % 6 for i in range(30))]
    with pytest.raises(SchemaError):
        SampleReader(client, ns).read(StorePosition("0-0", 0, None), 10, 0)  # the default
