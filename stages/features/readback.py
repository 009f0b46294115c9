"""Read back what the features stage stored (tests, debugging, `freshrec features status`).

Synchronous, on a `redis.Redis` client made with `decode_responses=False`. The trainer has its
own reader; this one reads the whole stream at once and is meant for small stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stages.common import keys
from stages.common.gaps import GapRecord, parse_gap_line
from stages.common.samples import (
    BlockLayout,
    ExpectedLayout,
    SampleBlock,
    block_schema,
    decode_block,
)
from stages.features.core import FieldStats, StatsFields, default_codec
from stages.features.store_schema import schema_key

if TYPE_CHECKING:
    from redis import Redis


def read_counters(client: Redis, namespace: str) -> dict[str, int]:
    """The `counters` hash as {name: value}; names as in `store.py`."""
    raw: dict[bytes, bytes] = client.hgetall(keys.counters(namespace))  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}


def read_watermarks(client: Redis, namespace: str, topic: str) -> dict[int, int]:
    """{partition: next offset to store} of `topic` (the hash's digit-only fields; the others
    are the topic incarnation's, see `read_topic_id`)."""
    key = keys.offsets(namespace, topic)
    raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    return {int(k): int(v) for k, v in raw.items() if k.isdigit()}


def read_topic_id(client: Redis, namespace: str, topic: str) -> str | None:
    """The Kafka topic id of the incarnation the watermarks of `topic` belong to (None: none)."""
    value: bytes | None = client.hget(keys.offsets(namespace, topic), "topic_id")  # type: ignore[assignment]
    return None if value is None else value.decode()


def read_store_schema(client: Redis, namespace: str) -> str | None:
    """The hash of the feature schema the store was claimed for (None: not claimed yet)."""
    value: bytes | None = client.get(schema_key(namespace))  # type: ignore[assignment]
    return None if value is None else value.decode()


def read_gaps(client: Redis, namespace: str) -> list[GapRecord]:
    """The records of the `gaps` list (both stages' kinds), oldest first; ContractError on a
    line that breaks the contract."""
    raw: list[bytes] = client.lrange(keys.gaps(namespace), 0, -1)  # type: ignore[assignment]
    return [parse_gap_line(line) for line in raw]


def stored_layout(fields: dict[bytes, bytes]) -> BlockLayout:
    """The layout a stored block says it has (its schema hash, widths from its sizes): for
    tools that show blocks as written. A consumer of the columns states its own instead."""
    n = int(fields.get(b"n", b"0") or 0)
    if n <= 0:
        return BlockLayout(block_schema(fields) or "", 0, 0)
    dense, ids = fields.get(b"dense", b""), fields.get(b"ids", b"")
    return BlockLayout(block_schema(fields) or "", len(dense) // (4 * n), len(ids) // (8 * n))


def read_blocks(
    client: Redis, namespace: str, count: int = 1000, expected: ExpectedLayout | None = None
) -> list[SampleBlock]:
    """Every sample block still in the stream, in stream order (XRANGE in pages of `count`),
    decoded with the `expected` layout (SchemaError on a block of another schema) or, when None,
    each as it says it was written (`stored_layout`)."""
    stream = keys.samples_stream(namespace)
    blocks: list[SampleBlock] = []
    start = b"-"
    while True:
        page: Any = client.xrange(stream, start, "+", count=count)
        for entry_id, fields in page:
            blocks.append(decode_block(fields, expected or stored_layout(fields)))
        if len(page) < count:
            return blocks
        start = b"(" + page[-1][0]


def read_stats(
    client: Redis, namespace: str, fields: StatsFields | None = None
) -> tuple[int, FieldStats]:
    """(snapshot version, statistics of the schema of `fields`, None: the default schema) read
    in one transaction; version 0 = none yet."""
    pipe = client.pipeline(transaction=True)
    pipe.get(keys.stats_version(namespace))
    pipe.hgetall(keys.stats(namespace))
    version, stored = pipe.execute()
    return int(version or 0), FieldStats.from_hash(stored, fields or default_codec().stats_fields)
