"""Validation of raw lines by the feature schema, and the dead letters of the lines that fail.

A line is valid exactly when the schema's row parser (`stages.common.rows`) accepts it (the one
definition of "valid"), and not longer than the line limit ("line too long: N bytes (limit L)").
`RowValidator.for_schema(schema, header)` decides how ingest checks a batch:
- columnar (`fast` set), for a columnar schema (`rows_arrow`) by position without event fields:
  `fast_valid` decides a whole `LineBatch` at once; for the Criteo layout (label, int dense
  fields, hex categorical fields, in this order, tsv) `rowcheck.surely_valid` (NumPy bit sets)
  accepts the usual valid rows first; the lines left open are matched against the schema's row
  pattern by pyarrow's RE2; reasons are computed for the failures only;
- row by row otherwise (`RowParser.parse`: JSON lines, str/int/multi fields, header formats,
  event fields).

A rejected line goes to `freshrec.events.dlq` as a `stages.common.dead_letter.DeadLetterRecord`
(stage "ingest", a file position): key = b"<source_tag>:<seq>", the event id the row would have
had (so it names the source and the position, and a line dead-lettered twice has the same key).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from stages.common.dead_letter import DeadLetterRecord, FilePosition
from stages.common.rows import RowParser
from stages.common.rows_arrow import ArrowRowParser
from stages.common.schema import FeatureSchema
from stages.ingest.core.lines import MAX_LINE_BYTES, LineBatch
from stages.ingest.core.rowcheck import MAX_DENSE, surely_valid
from stages.ingest.core.scratch import scratch


@dataclass(frozen=True)
class FastCheck:
    """The columnar check of a schema: `pattern` (RE2, applied to b"\t" + line, see
    `separated_lines`) and, for the Criteo layout, rowcheck's (int dense, hex) field counts."""

    pattern: str
    layout: tuple[int, int] | None


@dataclass(frozen=True)
class RowValidator:
    """How ingest validates the lines of one schema (and header line): `parser` says what is
    valid and why not; `fast`, when set, checks whole batches in columns."""

    parser: RowParser
    fast: FastCheck | None

    @staticmethod
    def for_schema(schema: FeatureSchema, header: tuple[str, ...] | None = None) -> RowValidator:
        parser = RowParser.for_schema(schema, header, hash_strings=False)  # values unused
        if not isinstance(parser, ArrowRowParser) or schema.event_id or schema.event_time:
            return RowValidator(parser, None)
        # RE2 has no possessive groups and needs none (it never backtracks).
        pattern = "^\t" + parser.re2_pattern() + "\r?$"
        return RowValidator(parser, FastCheck(pattern, rowcheck_layout(schema)))


def rowcheck_layout(schema: FeatureSchema) -> tuple[int, int] | None:
    """(int dense fields, hex categorical fields) when the schema's rows are tsv: the label,
    then int dense fields, then hex categorical fields (what `rowcheck` decides); else None."""
    dense, cats = schema.dense, schema.categorical
    expected = (schema.label.name, *(f.name for f in dense), *(f.name for f in cats))
    simple = (
        schema.format.kind == "tsv" and not schema.multi and schema.columns() == expected
        and all(f.type == "int" for f in dense) and all(f.type == "hex" for f in cats)
        and 1 <= len(dense) <= MAX_DENSE and len(cats) >= 1
    )  # fmt: skip
    return (len(dense), len(cats)) if simple else None


# pyarrow's own numpy conversions try to import pandas (seconds, on first use): these don't.
def bools_to_numpy(array: pa.Array) -> npt.NDArray[np.bool_]:
    """A pyarrow boolean array without nulls -> bool[n]."""
    bits = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[array.offset : array.offset + len(array)].astype(
        np.bool_
    )


def numpy_to_arrow(values: npt.NDArray[np.int64] | npt.NDArray[np.bool_]) -> pa.Array:
    """int64[n] or bool[n] -> a pyarrow array (no nulls), without pyarrow's pandas probing."""
    if values.dtype == np.bool_:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def separated_lines(batch: LineBatch, *, reuse: bool = False) -> pa.BinaryArray:
    """The lines of `batch` as a pyarrow array whose item i is b"\\t" + line i.

    One copy of the chunk, shifted by one byte: every b"\\n" becomes the b"\\t" in front of the
    next line, so the array reuses the batch's offsets, and the events can be built from it
    without another copy. reuse: make the copy in this thread's `scratch` memory; the array is
    then valid until the next such call in this thread (use it, do not keep it).
    """
    size = len(batch.data) + 1
    data = scratch("separated", size, np.uint8) if reuse else np.empty(size, dtype=np.uint8)
    data[0] = 9
    data[1:] = np.frombuffer(batch.data, dtype=np.uint8)
    data[batch.offsets[1:]] = 9  # the b"\\n" ending line i now precedes line i + 1
    offsets = batch.offsets.astype(np.int32) if size < 2**31 else batch.offsets
    kind = pa.binary() if offsets.dtype == np.int32 else pa.large_binary()
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(kind, len(batch), buffers)


def fast_valid(lines: pa.Array, batch: LineBatch, fast: FastCheck) -> npt.NDArray[np.bool_]:
    """bool[n]: True where line i is a valid row (and was not cut for being too long).

    `lines` is `separated_lines(batch)`. For the Criteo layout most lines are decided by
    `rowcheck.surely_valid`; the lines left open are matched against the row pattern by RE2.
    """
    if len(batch) == 0:
        return np.zeros(0, dtype=np.bool_)
    if fast.layout is not None:
        ok = surely_valid(batch.data, batch.offsets, *fast.layout)
    else:
        ok = np.zeros(len(batch), dtype=np.bool_)
    cut = np.zeros(len(batch), dtype=np.bool_)
    cut[list(batch.full_length)] = True
    undecided = np.flatnonzero(~ok & ~cut)
    if len(undecided):
        matched = pc.match_substring_regex(lines.take(numpy_to_arrow(undecided)), fast.pattern)
        ok[undecided] = bools_to_numpy(matched)
    ok[cut] = False
    return ok


def line_reason(
    parser: RowParser, raw: bytes, full_length: int | None = None, limit: int = MAX_LINE_BYTES
) -> str:
    """Why `raw` (a line without its line end) is not a valid row of the parser's schema.

    `full_length` is the line's real length when `raw` was cut. Returns a reason for every line
    the validator rejects; a line that the parser accepts gets a reason that says so (it means
    the fast path and the parser disagree, a bug).
    """
    if full_length is not None and full_length > limit:
        return f"line too long: {full_length} bytes (limit {limit})"
    reason = parser.row_error(raw)
    if reason is None:
        return "rejected by the fast validator although the row parser accepts it (a bug)"
    return reason


def reason_kind(reason: str) -> str:
    """The reason without its detail, for counting: "I3 is not an integer: 'x'" -> "I3 is ..."."""
    if reason.startswith("expected "):
        return "wrong number of fields"
    return reason.split(":", 1)[0]


@dataclass(frozen=True)
class DeadLetter:
    """One rejected line: where it was, why, and its bytes (cut to the line-length limit;
    raw_length is the real length). `record()` is its wire form."""

    source: str
    source_tag: str
    line: int
    seq: int
    reason: str
    raw: bytes
    raw_length: int
    ingest_time_ms: int

    @property
    def kind(self) -> str:
        """The reason without its detail."""
        return reason_kind(self.reason)

    def key(self) -> bytes:
        """The record key: the event id the row would have had."""
        return b"%s:%d" % (self.source_tag.encode(), self.seq)

    def record(self) -> DeadLetterRecord:
        """The dead-letter record (the shared contract of every stage's dead-letter topic)."""
        position = FilePosition(
            source=self.source, source_tag=self.source_tag, line=self.line, seq=self.seq
        )
        return DeadLetterRecord.of(
            stage="ingest",
            reason=self.reason,
            kind=self.kind,
            raw=self.raw,
            key=self.key(),
            position=position,
            time_ms=self.ingest_time_ms,
            raw_length=self.raw_length,
        )

    def value(self) -> bytes:
        """The record value (compact JSON, UTF-8)."""
        return self.record().value()
