"""The trainer's reader of the Redis feature store (stream `keys.samples_stream(namespace)`).

Blocks are read in stream order after a `StorePosition` (exclusive), never twice. Missed blocks
(a jump in block `seq`: trimmed by retention before the trainer read them) are found by
`core.positions.advance`; `report_gaps` records them in the store (the `gaps` list, as
`stages.common.gaps.TrimmedBlocksRecord` lines, and the `trainer_missed_blocks` counter) besides
the trainer's own log and MLflow metric.

Every block is decoded with the layout of the trainer's feature schema: a block written with
another schema stops the reader with SchemaError (`samples.decode_block`), it is never reshaped.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from stages.common import keys
from stages.common.errors import ServiceUnavailable, TrainError, require
from stages.common.gaps import TrimmedBlocksRecord
from stages.common.samples import BlockLayout, ExpectedLayout, SampleBlock, decode_block
from stages.common.schema import FeatureSchema
from stages.common.settings import CommonSettings
from stages.train.core.positions import SeqGap, StorePosition

if TYPE_CHECKING:
    import redis

MISSED_COUNTER = b"trainer_missed_blocks"
REPORTED_SEQ = b"trainer_gaps_reported_seq"
GAPS_KEEP = 10_000  # lines of the `gaps` list kept (the newest); the counters keep the totals
Entry = tuple[str, SampleBlock]


def _default_schema() -> FeatureSchema:
    from stages.common.schema import load_schema

    return load_schema(CommonSettings.model_fields["feature_schema"].default)


class SampleReader:
    """Reads sample blocks of one namespace, made with the schema `layout` describes (a
    `layout.Layout` or `samples.BlockLayout`; None: the default preset of FRESHREC_SCHEMA, for
    tests and tools). Build it with `from_settings`; `close()` after."""

    def __init__(
        self, client: redis.Redis, namespace: str, layout: ExpectedLayout | None = None
    ) -> None:
        self._client = client
        self.namespace = namespace
        self._stream = keys.samples_stream(namespace)
        self.layout = BlockLayout.of(layout or BlockLayout.for_schema(_default_schema()))

    @classmethod
    def from_settings(
        cls, common: CommonSettings, layout: ExpectedLayout | None = None
    ) -> SampleReader:
        """A reader on `FRESHREC_REDIS_URL` of blocks of `layout` (None: the schema of
        FRESHREC_SCHEMA); ServiceUnavailable when Redis does not answer."""
        redis_mod: Any = require("redis", "train")
        password = common.redis_password.get_secret_value() if common.redis_password else None
        kwargs: dict[str, Any] = {"socket_connect_timeout": 5, "health_check_interval": 30}
        if password is not None:
            kwargs["password"] = password
        client = redis_mod.Redis.from_url(common.redis_url, **kwargs)
        layout = layout or BlockLayout.for_schema(common.schema())
        reader = cls(client, common.redis_namespace, layout)
        reader._call(client.ping)
        return reader

    def close(self) -> None:
        self._client.close()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        redis_mod: Any = require("redis", "train")
        try:
            return fn(*args, **kwargs)
        except redis_mod.exceptions.ConnectionError as exc:
            raise ServiceUnavailable(
                f"Redis does not answer ({exc}): start it or set FRESHREC_REDIS_URL"
            ) from None
        except redis_mod.exceptions.ResponseError as exc:
            raise TrainError(f"Redis refused a read of the sample stream: {exc}") from None

    def epoch(self) -> str:
        """The store's incarnation id, set now (SET NX, a random id) when the store has none:
        a Redis that restarted empty gets a new one, whoever touches it first."""
        key = keys.store_epoch(self.namespace)
        self._call(self._client.set, key, uuid.uuid4().hex, nx=True)
        value = self._call(self._client.get, key)
        return value.decode() if isinstance(value, bytes) else str(value)

    def last_seq(self) -> int:
        """The last block seq the store handed out (0 when none)."""
        return int(self._call(self._client.get, keys.samples_seq(self.namespace)) or 0)

    def _decode(self, raw: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Entry]:
        """SchemaError on a block of another schema (decode_block)."""
        layout = self.layout
        return [(entry_id.decode(), decode_block(fields, layout)) for entry_id, fields in raw]

    def read(self, position: StorePosition, count: int, block_seconds: float) -> list[Entry]:
        """Up to `count` entries `(entry_id, block)` after `position`, in stream order, waiting
        up to `block_seconds` for the first (0: do not wait). Apply them with
        `core.positions.advance`."""
        block_ms = int(block_seconds * 1000)
        reply = self._call(
            self._client.xread,
            {self._stream: position.stream_id},
            count=count,
            block=block_ms if block_ms > 0 else None,
        )
        return self._decode(reply[0][1] if reply else [])

    def read_until(self, position: StorePosition, last_id: str, count: int) -> list[Entry]:
        """Every entry after `position` up to `last_id` inclusive (what another rank read).

        TrainError when entry `last_id` is not there any more (trimmed meanwhile), since the
        ranks would then train on different data.
        """
        entries: list[Entry] = []
        start = position.stream_id
        while start != last_id:
            raw = self._call(
                self._client.xrange, self._stream, min=f"({start}", max=last_id, count=count
            )
            if not raw:
                break
            entries.extend(self._decode(raw))
            start = entries[-1][0]
        if (entries[-1][0] if entries else position.stream_id) != last_id:
            raise TrainError(
                f"stream entry {last_id} was trimmed before this rank read it: raise the "
                "store's retention or restart the trainer"
            )
        return entries

    def report_gaps(self, gaps: list[SeqGap], consumer: str) -> None:
        """Record missed blocks in the store: one `TrimmedBlocksRecord` line per gap in the
        `gaps` list and the total in the `counters` hash (`trainer_missed_blocks`). A gap is
        recorded once: gaps ending at or below the counter `trainer_gaps_reported_seq` (a
        trainer restarted from a checkpoint finds them again) are left out."""
        if not gaps:
            return
        counters = keys.counters(self.namespace)
        reported = int(self._call(self._client.hget, counters, REPORTED_SEQ) or 0)
        fresh = [g for g in gaps if g.last > reported]
        if not fresh:
            return
        now_ms = int(time.time() * 1000)
        pipe = self._client.pipeline(transaction=True)
        for gap in fresh:
            line = TrimmedBlocksRecord(
                consumer=consumer,
                first_seq=gap.first,
                last_seq=gap.last,
                blocks=gap.blocks,
                time_ms=now_ms,
            )
            pipe.rpush(keys.gaps(self.namespace), line.to_json())
        pipe.ltrim(keys.gaps(self.namespace), -GAPS_KEEP, -1)  # newest lines only: bounded
        pipe.hincrby(counters, MISSED_COUNTER, sum(g.blocks for g in fresh))
        pipe.hset(counters, REPORTED_SEQ, max(g.last for g in fresh))
        self._call(pipe.execute)
