"""Read back what the features stage stored (tests, debugging, `freshrec features status`).

Synchronous, on a `redis.Redis` client made with `decode_responses=False`. The trainer has its
own reader; this one reads the whole stream at once and is meant for small stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stages.common import keys
from stages.common.gaps import GapRecord, parse_gap_line
from stages.common.samples import SampleBlock, decode_block
from stages.features.core import FieldStats

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


def read_gaps(client: Redis, namespace: str) -> list[GapRecord]:
    """The records of the `gaps` list (both stages' kinds), oldest first; ContractError on a
    line that breaks the contract."""
    raw: list[bytes] = client.lrange(keys.gaps(namespace), 0, -1)  # type: ignore[assignment]
    return [parse_gap_line(line) for line in raw]


def read_blocks(client: Redis, namespace: str, count: int = 1000) -> list[SampleBlock]:
    """Every sample block still in the stream, in stream order (XRANGE in pages of `count`)."""
    stream = keys.samples_stream(namespace)
    blocks: list[SampleBlock] = []
    start = b"-"
    while True:
        page: Any = client.xrange(stream, start, "+", count=count)
        for entry_id, fields in page:
            blocks.append(decode_block(fields))
        if len(page) < count:
            return blocks
        start = b"(" + page[-1][0]


def read_stats(client: Redis, namespace: str) -> tuple[int, FieldStats]:
    """(snapshot version, statistics) read in one transaction; version 0 = none yet."""
    pipe = client.pipeline(transaction=True)
    pipe.get(keys.stats_version(namespace))
    pipe.hgetall(keys.stats(namespace))
    version, fields = pipe.execute()
    return int(version or 0), FieldStats.from_hash(fields)
