"""Training samples and their stored form: one block of samples per Redis stream entry.

A block is columnar and little-endian, sample schema version 2. Stream entry fields (all bytes):

    v       b"2"                      sample schema version
    schema  16 hex digits             the feature schema's hash (`FeatureSchema.schema_hash`) the
                                      block was made with: it fixes D, S and what each column means
    seq     decimal                   block sequence number, 1, 2, 3, ... over the whole store;
                                      a reader that sees seq jump knows blocks were trimmed
    n       decimal                   rows in the block
    src     b"topic/partition/first/last"  the Kafka offsets the rows came from (inclusive)
    label   uint8[n]                  0/1
    dense   float32[n, D]             dense model inputs (`layout.Transform.dense`), D = n_dense
    ids     uint64[n, S]              feature ids (`layout.Transform.ids`), S = n_slots,
                                      admission NOT applied
    ts      int64[n]                  event time, ms since the epoch

Rows keep their Kafka order within a block; blocks of different partitions interleave.
A reader states the layout it expects (`decode_block(fields, expected)`): a block of another
schema is refused with SchemaError, never reshaped. Version-1 blocks (before schemas, no
`schema` field) are refused with ContractError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from stages.common.errors import ContractError
from stages.common.schema import FeatureSchema, SchemaError

SAMPLE_SCHEMA_VERSION = 2
_FIELDS = {b"v", b"schema", b"seq", b"n", b"src", b"label", b"dense", b"ids", b"ts"}


class ExpectedLayout(Protocol):
    """What a reader expects of a block: `layout.Layout` or `BlockLayout`."""

    @property
    def schema_hash(self) -> str: ...

    @property
    def n_dense(self) -> int: ...

    @property
    def n_slots(self) -> int: ...


@dataclass(frozen=True)
class BlockLayout:
    """The shape of the samples of one schema: its hash, D dense inputs, S id slots."""

    schema_hash: str
    n_dense: int
    n_slots: int

    @staticmethod
    def of(layout: ExpectedLayout) -> BlockLayout:
        return BlockLayout(layout.schema_hash, layout.n_dense, layout.n_slots)

    @staticmethod
    def for_schema(schema: FeatureSchema) -> BlockLayout:
        """The stored shape of `schema`'s samples (embedding dimensions do not change it)."""
        from stages.common.layout import compile_layout

        return BlockLayout.of(compile_layout(schema, 1))


@dataclass(frozen=True)
class SampleBatch:
    """Samples in columns: label uint8[n], dense float32[n, D], ids uint64[n, S], ts int64[n]
    (D and S: the schema's layout)."""

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
    def empty(n_dense: int, n_slots: int) -> SampleBatch:
        """No rows, of D = `n_dense` dense inputs and S = `n_slots` id slots."""
        return SampleBatch(
            np.empty(0, np.uint8),
            np.empty((0, n_dense), np.float32),
            np.empty((0, n_slots), np.uint64),
            np.empty(0, np.int64),
        )

    @staticmethod
    def concat(batches: list[SampleBatch], layout: ExpectedLayout | None = None) -> SampleBatch:
        """The rows of all batches, in order. An empty list gives an empty batch of `layout`'s
        widths (ValueError without one: the widths depend on the schema)."""
        if not batches:
            if layout is None:
                raise ValueError("SampleBatch.concat([]) needs the layout for its widths")
            return SampleBatch.empty(layout.n_dense, layout.n_slots)
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
    """One stored block: its sequence number, origin, rows and the schema hash they were made
    with."""

    seq: int
    source: SourceRange
    samples: SampleBatch
    schema_hash: str = ""


def encode_block(
    samples: SampleBatch, source: SourceRange, schema_hash: str, seq: int | None = None
) -> dict[bytes, bytes]:
    """The stream-entry fields of a block of samples made with the schema of `schema_hash`.
    `seq=None` leaves `seq` out (the writer's atomic script assigns it)."""
    fields = {
        b"v": b"%d" % SAMPLE_SCHEMA_VERSION,
        b"schema": schema_hash.encode(),
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


def block_schema(fields: dict[bytes, bytes]) -> str | None:
    """The schema hash a stored block names (None: a version-1 block, made before schemas)."""
    value = fields.get(b"schema")
    return None if value is None else value.decode("ascii", "replace")


def decode_block(fields: dict[bytes, bytes], expected: ExpectedLayout) -> SampleBlock:
    """Parse a stream entry made with the schema `expected` describes (a `layout.Layout` or a
    `BlockLayout`). SchemaError when the block names another schema (the message names both);
    ContractError on a wrong version, unknown fields or bad sizes."""
    unknown = set(fields) - _FIELDS
    if unknown:
        raise ContractError(f"sample block has unknown fields {sorted(unknown)!r}")
    if fields.get(b"v") != b"%d" % SAMPLE_SCHEMA_VERSION:
        raise ContractError(
            f"sample block schema version {fields.get(b'v')!r}, this build reads "
            f"{SAMPLE_SCHEMA_VERSION}: upgrade the reader, or drain the store (or give this "
            "pipeline a new FRESHREC_REDIS_NAMESPACE)"
        )
    schema = block_schema(fields)
    if schema != expected.schema_hash:
        raise SchemaError(
            f"sample block {fields.get(b'seq', b'?').decode('ascii', 'replace')} was made with "
            f"feature schema {schema}, this reader expects {expected.schema_hash}: set "
            "FRESHREC_SCHEMA to the schema the store was written with, or give this pipeline a "
            "new FRESHREC_REDIS_NAMESPACE"
        )
    try:
        n = int(fields[b"n"])
        topic, partition, first, last = fields[b"src"].decode().rsplit("/", 3)
        samples = SampleBatch(
            np.frombuffer(fields[b"label"], dtype="<u1"),
            np.frombuffer(fields[b"dense"], dtype="<f4").reshape(n, expected.n_dense),
            np.frombuffer(fields[b"ids"], dtype="<u8").reshape(n, expected.n_slots),
            np.frombuffer(fields[b"ts"], dtype="<i8"),
        )
        seq = int(fields[b"seq"])
    except (KeyError, ValueError) as exc:
        raise ContractError(f"malformed sample block: {exc}") from None
    if len(samples.label) != n or len(samples.event_time_ms) != n:
        raise ContractError(f"sample block says n={n} but its columns disagree")
    source = SourceRange(topic, int(partition), int(first), int(last))
    return SampleBlock(seq, source, samples, expected.schema_hash)
