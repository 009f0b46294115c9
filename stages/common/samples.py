"""Training samples and their stored form: one block of samples per Redis stream entry.

A block is columnar and little-endian, schema version 1. Stream entry fields (all bytes):

    v      b"1"                       schema version
    seq    decimal                    block sequence number, 1, 2, 3, ... over the whole store;
                                      a reader that sees seq jump knows blocks were trimmed
    n      decimal                    rows in the block
    src    b"topic/partition/first/last"  the Kafka offsets the rows came from (inclusive)
    label  uint8[n]                   0/1
    dense  float32[n, 13]             transformed dense features (`transform.dense_transform`)
    ids    uint64[n, 26]              feature ids (`hashing.feature_ids`), admission NOT applied
    ts     int64[n]                   event time, ms since the epoch

Rows keep their Kafka order within a block; blocks of different partitions interleave.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stages.common.criteo import N_CATS, N_DENSE
from stages.common.errors import ContractError

SAMPLE_SCHEMA_VERSION = 1
_FIELDS = {b"v", b"seq", b"n", b"src", b"label", b"dense", b"ids", b"ts"}


@dataclass(frozen=True)
class SampleBatch:
    """Samples in columns: label uint8[n], dense float32[n, 13], ids uint64[n, 26], ts int64[n]."""

    label: npt.NDArray[np.uint8]
    dense: npt.NDArray[np.float32]
    ids: npt.NDArray[np.uint64]
    event_time_ms: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, index: npt.NDArray[np.int64] | slice) -> SampleBatch:
        """The rows at `index` (a slice or an index array), order as given."""
        return SampleBatch(
            self.label[index], self.dense[index], self.ids[index], self.event_time_ms[index]
        )

    @staticmethod
    def concat(batches: list[SampleBatch]) -> SampleBatch:
        """The rows of all batches, in order. An empty list gives an empty batch."""
        if not batches:
            return SampleBatch(
                np.empty(0, np.uint8),
                np.empty((0, N_DENSE), np.float32),
                np.empty((0, N_CATS), np.uint64),
                np.empty(0, np.int64),
            )
        return SampleBatch(
            np.concatenate([b.label for b in batches]),
            np.concatenate([b.dense for b in batches]),
            np.concatenate([b.ids for b in batches]),
            np.concatenate([b.event_time_ms for b in batches]),
        )


@dataclass(frozen=True)
class SourceRange:
    """Where a block's rows came from: Kafka topic, partition and inclusive offsets."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True)
class SampleBlock:
    """One stored block: its sequence number, origin and rows."""

    seq: int
    source: SourceRange
    samples: SampleBatch


def encode_block(
    samples: SampleBatch, source: SourceRange, seq: int | None = None
) -> dict[bytes, bytes]:
    """The stream-entry fields of a block. `seq=None` leaves `seq` out (the writer's atomic
    script assigns it)."""
    fields = {
        b"v": b"%d" % SAMPLE_SCHEMA_VERSION,
        b"n": b"%d" % len(samples),
        b"src": b"%s/%d/%d/%d"
        % (source.topic.encode(), source.partition, source.first_offset, source.last_offset),
        b"label": np.ascontiguousarray(samples.label, dtype="<u1").tobytes(),
        b"dense": np.ascontiguousarray(samples.dense, dtype="<f4").tobytes(),
        b"ids": np.ascontiguousarray(samples.ids, dtype="<u8").tobytes(),
        b"ts": np.ascontiguousarray(samples.event_time_ms, dtype="<i8").tobytes(),
    }
    if seq is not None:
        fields[b"seq"] = b"%d" % seq
    return fields


def decode_block(fields: dict[bytes, bytes]) -> SampleBlock:
    """Parse a stream entry; ContractError on a wrong version, unknown fields or bad sizes."""
    unknown = set(fields) - _FIELDS
    if unknown:
        raise ContractError(f"sample block has unknown fields {sorted(unknown)!r}")
    if fields.get(b"v") != b"%d" % SAMPLE_SCHEMA_VERSION:
        raise ContractError(
            f"sample block schema version {fields.get(b'v')!r}, this build reads "
            f"{SAMPLE_SCHEMA_VERSION}: upgrade the reader or drain the store"
        )
    try:
        n = int(fields[b"n"])
        topic, partition, first, last = fields[b"src"].decode().rsplit("/", 3)
        samples = SampleBatch(
            np.frombuffer(fields[b"label"], dtype="<u1"),
            np.frombuffer(fields[b"dense"], dtype="<f4").reshape(n, N_DENSE),
            np.frombuffer(fields[b"ids"], dtype="<u8").reshape(n, N_CATS),
            np.frombuffer(fields[b"ts"], dtype="<i8"),
        )
        seq = int(fields[b"seq"])
    except (KeyError, ValueError) as exc:
        raise ContractError(f"malformed sample block: {exc}") from None
    if len(samples.label) != n or len(samples.event_time_ms) != n:
        raise ContractError(f"sample block says n={n} but its columns disagree")
    return SampleBlock(seq, SourceRange(topic, int(partition), int(first), int(last)), samples)
