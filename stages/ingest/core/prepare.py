"""One batch of lines -> event records for `freshrec.events` and dead letters (pure).

`prepare_batch` is the whole per-batch logic of ingest: validate every line, build the event
records of the valid ones (columnar, with pyarrow; the bytes equal
`events.encode_event(events.event_id(tag, seq), time, row)` for each row) and a `DeadLetter`
for each other line. Invariant: `len(batch) == len(result.values) + len(result.dead)`.

Sequence numbers: line i of the batch (1-based line number L = batch.first_line + i) gets
`seq = seq_base + L - 1`. For a file read once `seq_base` is 0, so an event id names its line;
`--loop` passes a new `seq_base` per pass so ids stay unique.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from stages.common.events import EVENT_SCHEMA_VERSION
from stages.ingest.core.lines import LineBatch
from stages.ingest.core.position import SeekPoint
from stages.ingest.core.validate import (
    DeadLetter,
    fast_valid,
    line_reason,
    numpy_to_arrow,
    separated_lines,
)


@dataclass(frozen=True)
class SourcePosition:
    """Where a batch comes from: the source name, its event-id tag, and the seq of line 1."""

    source: str
    source_tag: str
    seq_base: int = 0


@dataclass(frozen=True)
class PreparedBatch:
    """Records of one batch, in line order.

    keys/values: the event records (key = event id) of the valid lines.
    dead: the dead letters of the other lines. read: the number of lines in the batch.
    seek: set by the pipeline on the last part of a source batch whose end byte is known.
    """

    keys: list[bytes]
    values: list[bytes]
    dead: list[DeadLetter]
    read: int
    seek: SeekPoint | None = None


def _scalar(value: bytes) -> pa.Scalar:
    # Not pa.scalar(): it makes pyarrow try to import pandas (seconds) on first use.
    offsets = np.array([0, len(value)], dtype=np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(value)]
    array = pa.Array.from_buffers(pa.binary(), 1, buffers)
    return array[0]


def _as_binary(array: pa.Array) -> pa.Array:
    return pc.cast(pc.cast(array, pa.string()), pa.binary())


def prepare_batch(
    batch: LineBatch,
    position: SourcePosition,
    event_time_ms: int | npt.NDArray[np.int64],
) -> PreparedBatch:
    """Validate `batch` and build its records.

    event_time_ms: one time for the whole batch (files: when ingest read it) or int64[len(batch)]
    (the synthetic generator's times). The dead letters carry the batch's first time as their
    ingest time.
    """
    n = len(batch)
    if n == 0:
        return PreparedBatch([], [], [], 0)
    lines = separated_lines(batch, reuse=True)  # every array built from it is a copy
    good = fast_valid(lines, batch)
    first_seq = position.seq_base + batch.first_line - 1
    seqs = np.arange(first_seq, first_seq + n, dtype=np.int64)
    times = np.broadcast_to(np.asarray(event_time_ms, dtype=np.int64), (n,))
    dead: list[DeadLetter] = []
    if not good.all():
        for i in np.flatnonzero(~good).tolist():
            raw = batch.line(i)
            full = batch.full_length.get(i)
            dead.append(
                DeadLetter(
                    source=position.source,
                    source_tag=position.source_tag,
                    line=batch.first_line + i,
                    seq=int(seqs[i]),
                    reason=line_reason(raw, full),
                    raw=raw,
                    raw_length=len(raw) if full is None else full,
                    ingest_time_ms=int(times[0]),
                )
            )
        mask = numpy_to_arrow(good)
        lines, seqs, times = lines.filter(mask), seqs[good], times[good]
    if len(seqs) == 0:
        return PreparedBatch([], [], dead, n)
    empty = _scalar(b"")
    keys = pc.binary_join_element_wise(
        _scalar(position.source_tag.encode() + b":"), _as_binary(numpy_to_arrow(seqs)), empty
    )
    if (times == times[0]).all():
        time_part: pa.Scalar | pa.Array = _scalar(b"\t%d" % int(times[0]))
    else:
        time_part = pc.binary_join_element_wise(
            _scalar(b"\t"), _as_binary(numpy_to_arrow(times)), empty
        )
    values = pc.binary_join_element_wise(
        _scalar(b"%d\t" % EVENT_SCHEMA_VERSION), keys, time_part, lines, empty
    )
    return PreparedBatch(keys.to_pylist(), values.to_pylist(), dead, n)
