"""Micro-batches of Kafka records -> per-partition sample batches, dead letters and offset ranges.

Pure functions on columnar batches: no sockets, no clock. The adapter (`stages.features.store`)
writes each `PartitionBatch` with one atomic Redis script that also moves the partition's offset
watermark; `PartitionBatch.since(watermark)` drops the rows a previous write already stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stages.common.dead_letter import DeadLetterRecord, TopicPosition
from stages.common.gaps import OffsetGapRecord
from stages.common.raw import RawColumns
from stages.common.samples import SampleBatch
from stages.features.core.codec import SchemaCodec, default_codec
from stages.features.core.dedupe import EventIdColumns, parse_event_ids

# The detail at the end of a reason: after its last ": ", or a quoted value (b'...' or '...').
_DETAIL = re.compile(r"(: [^:]*| b?'.*)$")


@dataclass(frozen=True)
class RecordBatch:
    """Kafka records of one topic, in arrival order, in columns.

    partitions int32[n], offsets int64[n], keys/values the raw record bytes (key may be None).
    """

    topic: str
    partitions: npt.NDArray[np.int32]
    offsets: npt.NDArray[np.int64]
    keys: list[bytes | None]
    values: list[bytes]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class DeadLetter:
    """A record that broke the event contract, with where it came from and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str

    @property
    def kind(self) -> str:
        """The reason without its detail ("bad row: I3 is not an integer: 'x'" -> "bad row:
        I3 is not an integer"), for counting."""
        return _DETAIL.sub("", self.reason) or self.reason

    def record(self, time_ms: int) -> DeadLetterRecord:
        """The dead-letter record (the shared contract of every stage's dead-letter topic);
        time_ms: when the stage handled it (the adapter's clock, ms since the epoch)."""
        return DeadLetterRecord.of(
            stage="features",
            reason=self.reason,
            kind=self.kind,
            raw=self.value,
            key=self.key,
            position=TopicPosition(topic=self.topic, partition=self.partition, offset=self.offset),
            time_ms=time_ms,
        )


@dataclass(frozen=True)
class OffsetGap:
    """Offsets `expected` .. `got - 1` of a partition never arrived."""

    topic: str
    partition: int
    expected: int
    got: int

    def record(self) -> OffsetGapRecord:
        """Its line of the `gaps` list (the shared contract, see stages/common/gaps.py)."""
        return OffsetGapRecord(
            topic=self.topic, partition=self.partition, expected=self.expected, got=self.got
        )

    def to_json(self) -> bytes:
        """One JSON line of the `gaps` list."""
        return self.record().to_json().encode()


@dataclass(frozen=True)
class PartitionBatch:
    """The result of one micro-batch for one partition, offsets ascending.

    `events` records with offsets in [first_offset, last_offset] were consumed: each one is
    either a sample (`samples`, `sample_offsets` gives its offset, `sample_ids` its event id;
    `raw` the same rows before the transform, for statistics), a dead letter, or (after
    `keep_samples`, the event-id check) a re-sent event dropped as already stored. So
    `events == len(samples) + len(dead_letters) + dropped_by_id`. `gaps` are missing offsets
    inside the range. `schema_hash`: the feature schema the samples were made with (stored
    with their block).
    """

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    events: int
    samples: SampleBatch
    sample_offsets: npt.NDArray[np.int64]
    sample_ids: EventIdColumns
    raw: RawColumns
    dead_letters: list[DeadLetter]
    gaps: list[OffsetGap]
    schema_hash: str
    dropped_by_id: int = 0

    def keep_samples(self, keep: npt.NDArray[np.int64]) -> PartitionBatch:
        """This batch with only the samples at `keep` (ascending): the others count as
        `dropped_by_id`. Offsets, events and dead letters stay (the watermark moves past the
        dropped rows too). Itself when nothing is dropped."""
        dropped = len(self.samples) - len(keep)
        if dropped == 0:
            return self
        return PartitionBatch(
            topic=self.topic,
            partition=self.partition,
            first_offset=self.first_offset,
            last_offset=self.last_offset,
            events=self.events,
            samples=self.samples.take(keep),
            sample_offsets=self.sample_offsets[keep],
            sample_ids=self.sample_ids.take(keep),
            raw=self.raw.take(keep),
            dead_letters=self.dead_letters,
            gaps=self.gaps,
            schema_hash=self.schema_hash,
            dropped_by_id=self.dropped_by_id + dropped,
        )

    def since(self, watermark: int) -> PartitionBatch | None:
        """The rows with offset >= watermark (None when nothing is left): a replay's new part.
        Call it before the event-id check (ValueError on a batch with dropped rows)."""
        if watermark <= self.first_offset:
            return self
        if watermark > self.last_offset:
            return None
        if self.dropped_by_id:
            raise ValueError("PartitionBatch.since after keep_samples: trim by offset first")
        keep = np.flatnonzero(self.sample_offsets >= watermark)
        dead = [d for d in self.dead_letters if d.offset >= watermark]
        offsets = np.concatenate([self.sample_offsets[keep], [d.offset for d in dead]])
        return PartitionBatch(
            topic=self.topic,
            partition=self.partition,
            first_offset=int(offsets.min()),
            last_offset=self.last_offset,
            events=len(keep) + len(dead),
            samples=self.samples.take(keep),
            sample_offsets=self.sample_offsets[keep],
            sample_ids=self.sample_ids.take(keep),
            raw=self.raw.take(keep),
            dead_letters=dead,
            gaps=[g for g in self.gaps if g.got > watermark],
            schema_hash=self.schema_hash,
        )


@dataclass(frozen=True)
class SplitResult:
    """`batches` one per partition (ascending partition); `repeated` records dropped because
    their (partition, offset) appeared earlier in the same micro-batch."""

    batches: list[PartitionBatch]
    repeated: int


def split_batch(records: RecordBatch, codec: SchemaCodec | None = None) -> SplitResult:
    """Decode a micro-batch with the feature schema of `codec` (None: the default schema) and
    cut it per partition, offsets ascending.

    Never raises on bad input: a record that breaks the contract (or is not a row of the
    schema) becomes a DeadLetter. Decoding happens once for the whole micro-batch (the parser
    is columnar).
    """
    codec = codec or default_codec()
    n = len(records)
    if n == 0:
        return SplitResult([], 0)
    order = np.lexsort((records.offsets, records.partitions))
    parts = records.partitions[order]
    offs = records.offsets[order]
    # The same record twice in one batch (a re-fetch after a seek) counts once.
    first = np.ones(n, dtype=np.bool_)
    first[1:] = (parts[1:] != parts[:-1]) | (offs[1:] != offs[:-1])
    order, parts, offs = order[first], parts[first], offs[first]
    values = records.values
    decoded = codec.decode([values[i] for i in order])
    good = decoded.good_index
    samples = codec.samples(decoded.events)
    ids = parse_event_ids(decoded.events.event_ids)
    bad_pos = np.asarray([b.index for b in decoded.bad], dtype=np.int64)
    bad_reason = [b.reason for b in decoded.bad]
    bounds = np.flatnonzero(np.diff(parts)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(parts)]])
    good_cut = np.searchsorted(good, starts)
    good_end = np.searchsorted(good, ends)
    bad_cut = np.searchsorted(bad_pos, starts)
    bad_end = np.searchsorted(bad_pos, ends)
    batches = []
    for k, (lo, hi) in enumerate(zip(starts, ends)):
        partition = int(parts[lo])
        dead = [
            DeadLetter(
                records.topic,
                partition,
                int(offs[bad_pos[j]]),
                records.keys[order[bad_pos[j]]],
                values[order[bad_pos[j]]],
                bad_reason[j],
            )
            for j in range(bad_cut[k], bad_end[k])
        ]
        batches.append(
            PartitionBatch(
                topic=records.topic,
                partition=partition,
                first_offset=int(offs[lo]),
                last_offset=int(offs[hi - 1]),
                events=int(hi - lo),
                samples=samples.take(slice(int(good_cut[k]), int(good_end[k]))),
                sample_offsets=offs[good[good_cut[k] : good_end[k]]],
                sample_ids=ids.take(slice(int(good_cut[k]), int(good_end[k]))),
                raw=decoded.events.rows.take(slice(int(good_cut[k]), int(good_end[k]))),
                dead_letters=dead,
                gaps=_gaps(records.topic, partition, offs[lo:hi]),
                schema_hash=codec.schema_hash,
            )
        )
    return SplitResult(batches, int(n - len(order)))


def _gaps(topic: str, partition: int, offsets: npt.NDArray[np.int64]) -> list[OffsetGap]:
    jumps = np.flatnonzero(np.diff(offsets) > 1)
    return [
        OffsetGap(topic, partition, int(offsets[j]) + 1, int(offsets[j + 1])) for j in jumps
    ]


def warm_up(codec: SchemaCodec) -> None:
    """Run the schema's row parser once on one synthetic row: its first call imports pyarrow's
    lazy modules (pandas, seconds), which must not happen inside the consumer loop."""
    codec.parser.parse([codec.example_row()])
