"""The Criteo click-log row: its fields, per-row validation with reasons, and a columnar parser.

A row is 40 tab-separated fields: `label` (0/1), `I1..I13` (integers, may be negative),
`C1..C26` (8 hex digits). An empty field is a missing value. Every stage that reads raw rows
(ingest, serving, replay) uses these functions, so "valid" means the same thing everywhere.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

N_DENSE = 13
N_CATS = 26
N_FIELDS = 1 + N_DENSE + N_CATS
DENSE_NAMES = tuple(f"I{i}" for i in range(1, N_DENSE + 1))
CAT_NAMES = tuple(f"C{i}" for i in range(1, N_CATS + 1))

_COLUMNS = ["label", *DENSE_NAMES, *CAT_NAMES]
_COLUMN_TYPES = {
    "label": pa.int8(),
    **{name: pa.float64() for name in DENSE_NAMES},
    **{name: pa.string() for name in CAT_NAMES},
}
_INT = re.compile(rb"^-?[0-9]{1,18}$")
_HEX8 = re.compile(rb"^[0-9a-f]{8}$")
# One regex for the whole row: the fast path of validation (reasons come from `row_error`).
# Possessive groups (`?+`): fields are tab-delimited, so backtracking can never help, and
# without it the match is more than twice as fast.
ROW_PATTERN = rb"[01]" + rb"\t(?:-?[0-9]{1,18})?+" * N_DENSE + rb"\t(?:[0-9a-f]{8})?+" * N_CATS
VALID_ROW = re.compile(rb"^" + ROW_PATTERN + rb"\r?$")
_HEX_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_NIBBLE[_c] = _i


def _show(raw: bytes, limit: int = 40) -> str:
    text = raw[:limit].decode("utf-8", "backslashreplace")
    return repr(text + ("..." if len(raw) > limit else ""))


def row_error(line: bytes) -> str | None:
    """The reason a raw row is invalid, or None when it is valid.

    Reasons are short and name the field: "expected 40 fields, got 12",
    "label must be 0 or 1, got '2'", "I3 is not an integer: 'abc'",
    "C7 is not 8 lowercase hex digits: 'zz'". A trailing '\\r' is tolerated.
    """
    line = line.rstrip(b"\r\n")
    fields = line.split(b"\t")
    if len(fields) != N_FIELDS:
        return f"expected {N_FIELDS} fields, got {len(fields)}"
    if fields[0] not in (b"0", b"1"):
        return f"label must be 0 or 1, got {_show(fields[0])}"
    for name, value in zip(DENSE_NAMES, fields[1 : 1 + N_DENSE]):
        if value and not _INT.match(value):
            return f"{name} is not an integer: {_show(value)}"
    for name, value in zip(CAT_NAMES, fields[1 + N_DENSE :]):
        if value and not _HEX8.match(value):
            return f"{name} is not 8 lowercase hex digits: {_show(value)}"
    return None


@dataclass(frozen=True)
class RawBatch:
    """Valid Criteo rows in columns.

    label: int8[n]; dense: float64[n, 13] with NaN for missing (Criteo integers are far below
    2**53, so float64 holds them exactly); cats: uint32[n, 26] (the 8 hex digits as a number);
    cat_missing: bool[n, 26].
    """

    label: npt.NDArray[np.int8]
    dense: npt.NDArray[np.float64]
    cats: npt.NDArray[np.uint32]
    cat_missing: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.label.shape[0])


def hex8_to_uint32(digits: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
    """uint8[n, 8] of ASCII lowercase hex digits -> uint32[n]. Caller guarantees validity."""
    nibbles = _HEX_NIBBLE[digits].astype(np.uint32)
    shifts = np.arange(28, -1, -4, dtype=np.uint32)
    return np.bitwise_or.reduce(nibbles << shifts, axis=1).astype(np.uint32)


def parse_valid_rows(lines: list[bytes]) -> RawBatch:
    """Parse rows that already passed validation (`row_error(line) is None`) into columns.

    Order is kept: row i of the batch is lines[i]. Columnar (pyarrow's CSV reader), so it runs
    at hundreds of thousands of rows per second rather than Python speed.
    """
    if not lines:
        return _empty_batch()
    table = read_table(b"\n".join(line.rstrip(b"\r\n") for line in lines))
    return raw_batch(table)


def read_table(buffer: bytes, prefix: tuple[tuple[str, pa.DataType], ...] = ()) -> pa.Table:
    """Valid rows joined by newlines -> a pyarrow table; `prefix` names and types leading
    columns that come before the 40 Criteo fields (the event header, for instance)."""
    names = [name for name, _ in prefix] + _COLUMNS
    types = {**dict(prefix), **_COLUMN_TYPES}
    return pa_csv.read_csv(
        io.BytesIO(buffer),
        read_options=pa_csv.ReadOptions(column_names=names, block_size=1 << 26),
        parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False),
        convert_options=pa_csv.ConvertOptions(
            column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )


def _empty_batch() -> RawBatch:
    return RawBatch(
        label=np.empty(0, np.int8),
        dense=np.empty((0, N_DENSE), np.float64),
        cats=np.empty((0, N_CATS), np.uint32),
        cat_missing=np.empty((0, N_CATS), np.bool_),
    )


def raw_batch(table: pa.Table) -> RawBatch:
    """The Criteo columns of a table from `read_table` as a RawBatch."""
    n = table.num_rows
    if n == 0:
        return _empty_batch()
    label = table.column("label").to_numpy().astype(np.int8)
    dense = np.empty((n, N_DENSE), dtype=np.float64)
    for j, name in enumerate(DENSE_NAMES):
        dense[:, j] = table.column(name).to_numpy(zero_copy_only=False)
    cats = np.empty((n, N_CATS), dtype=np.uint32)
    cat_missing = np.empty((n, N_CATS), dtype=np.bool_)
    for j, name in enumerate(CAT_NAMES):
        column = table.column(name).combine_chunks()
        missing = pc.equal(column, "")
        cat_missing[:, j] = missing.to_numpy(zero_copy_only=False)
        filled = pa.array(pc.if_else(missing, "00000000", column)).cast(pa.binary())
        digits = np.frombuffer(filled.buffers()[2], dtype=np.uint8)
        offset = filled.offset * 8
        cats[:, j] = hex8_to_uint32(digits[offset : offset + 8 * n].reshape(n, 8))
    return RawBatch(label=label, dense=dense, cats=cats, cat_missing=cat_missing)
