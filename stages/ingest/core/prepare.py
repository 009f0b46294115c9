"""One batch of lines -> event records for `freshrec.events` and dead letters (pure).

`prepare_batch` is the whole per-batch logic of ingest: validate every line by the schema
(`validate.RowValidator`), build the event records of the valid ones (the bytes equal
`events.encode_event(id, time, row, schema_hash)` for each row; columnar, with pyarrow, for
a columnar schema) and a `DeadLetter` for each other line.
Invariant: `read == len(values) + len(dead) + headers`.

Event ids and times: from the schema's event-id and event-time fields when it declares them;
otherwise the id is `<source tag>:<seq>` and the time the batch's (when ingest read it, or the
generator's). A header format's rows are sent in the wire column order (`RowParser.to_wire`).

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

from stages.common.events import EVENT_SCHEMA_VERSION, encode_event, event_id
from stages.ingest.core.lines import LineBatch
from stages.ingest.core.position import SeekPoint
from stages.ingest.core.validate import (
    DeadLetter,
    FastCheck,
    RowValidator,
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
    dead: the dead letters of the other lines. read: the number of lines in the batch, header
    lines included. headers: the header lines among them (a header format's line 1: neither an
    event nor a dead letter). seek: set by the pipeline on the last part of a source batch
    whose end byte is known.
    """

    keys: list[bytes]
    values: list[bytes]
    dead: list[DeadLetter]
    read: int
    seek: SeekPoint | None = None
    headers: int = 0


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
    validator: RowValidator,
) -> PreparedBatch:
    """Validate `batch` by the validator's schema and build its records.

    event_time_ms: one time for the whole batch (files: when ingest read it) or int64[len(batch)]
    (the synthetic generator's times); the schema's event-time field wins when declared. The
    dead letters carry the batch's first time as their ingest time.
    """
    n = len(batch)
    if n == 0:
        return PreparedBatch([], [], [], 0)
    first_seq = position.seq_base + batch.first_line - 1
    seqs = np.arange(first_seq, first_seq + n, dtype=np.int64)
    times = np.broadcast_to(np.asarray(event_time_ms, dtype=np.int64), (n,))
    if validator.fast is not None:
        return _prepare_columnar(batch, position, seqs, times, validator, validator.fast)
    return _prepare_rows(batch, position, seqs, times, validator)


def _dead(
    batch: LineBatch, position: SourcePosition, i: int, seq: int, reason: str, time_ms: int
) -> DeadLetter:
    raw = batch.line(i)
    full = batch.full_length.get(i)
    return DeadLetter(
        source=position.source,
        source_tag=position.source_tag,
        line=batch.first_line + i,
        seq=seq,
        reason=reason,
        raw=raw,
        raw_length=len(raw) if full is None else full,
        ingest_time_ms=time_ms,
    )


def _prepare_rows(
    batch: LineBatch,
    position: SourcePosition,
    seqs: npt.NDArray[np.int64],
    times: npt.NDArray[np.int64],
    validator: RowValidator,
) -> PreparedBatch:
    parser = validator.parser
    schema = parser.schema
    n, first_time = len(batch), int(times[0])
    lines = [batch.line(i) for i in range(n)]
    todo = [i for i in range(n) if i not in batch.full_length] if batch.full_length else None
    parsed = parser.parse(lines if todo is None else [lines[i] for i in todo])
    where = (lambda k: k) if todo is None else todo.__getitem__
    reasons = {i: line_reason(parser, lines[i], full) for i, full in batch.full_length.items()}
    reasons.update((where(k), reason) for k, reason in parsed.bad)
    dead = [_dead(batch, position, i, int(seqs[i]), reasons[i], first_time) for i in sorted(reasons)]
    keys: list[bytes] = []
    values: list[bytes] = []
    schema_hash, tag = schema.schema_hash, position.source_tag
    for j, k in enumerate(parsed.good_index.tolist()):
        i = where(k)
        eid = parsed.event_ids[j] or event_id(tag, int(seqs[i]))
        when = int(parsed.event_time_ms[j]) if schema.event_time is not None else int(times[i])
        keys.append(eid.encode())
        values.append(encode_event(eid, when, parser.to_wire(lines[i]), schema_hash))
    return PreparedBatch(keys, values, dead, n)


def _prepare_columnar(
    batch: LineBatch,
    position: SourcePosition,
    seqs: npt.NDArray[np.int64],
    times: npt.NDArray[np.int64],
    validator: RowValidator,
    fast: FastCheck,
) -> PreparedBatch:
    n = len(batch)
    lines = separated_lines(batch, reuse=True)  # every array built from it is a copy
    good = fast_valid(lines, batch, fast)
    dead: list[DeadLetter] = []
    if not good.all():
        for i in np.flatnonzero(~good).tolist():
            reason = line_reason(validator.parser, batch.line(i), batch.full_length.get(i))
            dead.append(_dead(batch, position, i, int(seqs[i]), reason, int(times[0])))
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
    head = b"%d\t%s\t" % (EVENT_SCHEMA_VERSION, validator.parser.schema.schema_hash.encode())
    values = pc.binary_join_element_wise(_scalar(head), keys, time_part, lines, empty)
    return PreparedBatch(keys.to_pylist(), values.to_pylist(), dead, n)
