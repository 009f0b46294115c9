"""Validation of raw lines, and the dead letters of the lines that fail.

A line is valid exactly when `criteo.VALID_ROW` matches it (the one definition of "valid").
The fast path decides a whole `LineBatch` at once: `rowcheck.surely_valid` (NumPy bit sets)
accepts the usual valid rows, and the lines it leaves open are matched against that same pattern
by pyarrow's RE2; the reason of a failure comes from `criteo.row_error`, computed only for the
failures, after three checks of our own: "blank line", "line too long: N bytes (limit L)" and
"not UTF-8: byte 0xNN at offset K".

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

from stages.common.criteo import VALID_ROW, row_error
from stages.common.dead_letter import DeadLetterRecord, FilePosition
from stages.ingest.core.lines import MAX_LINE_BYTES, LineBatch
from stages.ingest.core.rowcheck import surely_valid
from stages.ingest.core.scratch import scratch

# VALID_ROW for RE2, applied to b"\t" + line (see `separated_lines`). RE2 has no possessive
# groups and needs none (it never backtracks): `(...)?+` and `(...)?` match the same rows.
_FAST_PATTERN = "^\t" + VALID_ROW.pattern.decode("ascii")[1:].replace(")?+", ")?")


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


def fast_valid(lines: pa.Array, batch: LineBatch) -> npt.NDArray[np.bool_]:
    """bool[n]: True where line i is a valid row (and was not cut for being too long).

    `lines` is `separated_lines(batch)`. Most lines are decided by `rowcheck.surely_valid`; the
    few it leaves open are matched against `VALID_ROW` by RE2.
    """
    if len(batch) == 0:
        return np.zeros(0, dtype=np.bool_)
    ok = surely_valid(batch.data, batch.offsets)
    cut = np.zeros(len(batch), dtype=np.bool_)
    cut[list(batch.full_length)] = True
    undecided = np.flatnonzero(~ok & ~cut)
    if len(undecided):
        matched = pc.match_substring_regex(lines.take(numpy_to_arrow(undecided)), _FAST_PATTERN)
        ok[undecided] = bools_to_numpy(matched)
    ok[cut] = False
    return ok


def line_reason(raw: bytes, full_length: int | None = None, limit: int = MAX_LINE_BYTES) -> str:
    """Why `raw` (a line without its line end) is not a valid row.

    `full_length` is the line's real length when `raw` was cut. Returns a reason for every line
    the validator rejects; a line that `VALID_ROW` accepts gets a reason that says so (it means
    the fast path and `VALID_ROW` disagree, a bug).
    """
    if full_length is not None and full_length > limit:
        return f"line too long: {full_length} bytes (limit {limit})"
    if not raw.strip(b"\r"):
        return "blank line"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    reason = row_error(raw)
    if reason is None:
        return "rejected by the fast validator although VALID_ROW accepts it (a bug)"
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
