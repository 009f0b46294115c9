"""The columnar row parser of simple delimited schemas (the Criteo preset's fast path).

For a tsv/csv schema read in `schema.columns()` order whose columns are the label, event
fields, int/float dense fields and hex categorical fields (no multi field, no str/int
categorical, no ignored column), validity is one regex per row generated from the schema
(`row_pattern`: the cell patterns of `row_values` joined by the delimiter), and the good rows
are parsed together by pyarrow's CSV reader (hundreds of thousands of rows a second). Reasons
come from the line-by-line parser (`rows.DelimitedRowParser`), which accepts exactly the same
rows (the unit tests check both on random rows).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from stages.common.raw import RawColumns
from stages.common.row_values import EVENT_ID, FLOAT, HEX, INT, LABEL, time_pattern
from stages.common.rows import DelimitedRowParser, ParsedRows, RowParser, _Row, delimiter
from stages.common.schema import FeatureSchema

_HEX_NIBBLE = np.zeros(256, dtype=np.uint32)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_NIBBLE[_c] = 10 + _i
_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)


def arrow_columns(schema: FeatureSchema, columns: Sequence[str]) -> bool:
    """True when `ArrowRowParser` can read rows of `schema` laid out as `columns`."""
    return (
        schema.format.kind != "jsonl"
        and tuple(columns) == schema.columns()
        and "_" not in columns
        and not schema.multi
        and all(f.type == "hex" for f in schema.categorical)
    )


def _cell_patterns(schema: FeatureSchema) -> dict[str, str]:
    """Column name -> its cell pattern (possessive optional groups: a cell never contains the
    delimiter, so backtracking into it can never help, and the match is twice as fast)."""
    out = {schema.label.name: LABEL}
    if schema.event_id is not None:
        out[schema.event_id.name] = EVENT_ID
    if schema.event_time is not None:
        out[schema.event_time.name] = time_pattern(schema.event_time)
    out.update({f.name: f"(?:{INT if f.type == 'int' else FLOAT})?+" for f in schema.dense})
    out.update({f.name: f"(?:{HEX})?+" for f in schema.categorical})
    return out


def hex_values(column: pa.Array) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """A string column of valid hex cells ("" = missing) -> (values uint64[n], missing bool[n])."""
    n = len(column)
    missing = pc.equal(column, "")
    filled = pc.if_else(missing, "00000000", column)
    if pc.min(pc.binary_length(filled)).as_py() < 8:
        filled = pc.utf8_lpad(filled, width=8, padding="0")
    data = pa.array(filled).cast(pa.binary())
    digits = np.frombuffer(data.buffers()[2], dtype=np.uint8)
    start = int(np.frombuffer(data.buffers()[1], dtype=np.int32)[data.offset])
    nibbles = _HEX_NIBBLE[digits[start : start + 8 * n].reshape(n, 8)]
    values = np.bitwise_or.reduce(nibbles << _SHIFTS, axis=1).astype(np.uint64)
    return values, missing.to_numpy(zero_copy_only=False)


class ArrowRowParser(RowParser):
    """Rows of a simple delimited schema, validated by one regex, parsed by pyarrow."""

    def __init__(self, schema: FeatureSchema, columns: tuple[str, ...]) -> None:
        super().__init__(schema)
        self.columns = columns
        self._lines = DelimitedRowParser(schema, columns)
        self.sep = delimiter(schema)
        cells = _cell_patterns(schema)
        #: One row, without anchors or line end (bytes; possessive groups: Python's `re`).
        self.pattern = re.escape(self.sep).join(cells[c] for c in columns).encode("ascii")
        self.valid_row = re.compile(rb"^" + self.pattern + rb"\r?$")
        self._types: dict[str, pa.DataType] = {schema.label.name: pa.int8()}
        self._types.update({f.name: pa.float64() for f in schema.dense})
        self._types.update({f.name: pa.string() for f in schema.categorical})
        if schema.event_id is not None:
            self._types[schema.event_id.name] = pa.string()
        if schema.event_time is not None:
            self._types[schema.event_time.name] = pa.int64()

    def re2_pattern(self) -> str:
        """`pattern` for RE2 (no possessive groups; it never backtracks, so the same rows)."""
        return self.pattern.decode("ascii").replace(")?+", ")?")

    def row(self, line: bytes) -> _Row:
        return self._lines.row(line)

    def parse(self, lines: Sequence[bytes]) -> ParsedRows:
        match = self.valid_row.match
        good = [i for i, line in enumerate(lines) if match(line)]
        bad: list[tuple[int, str]] = []
        if len(good) < len(lines):
            keep = set(good)
            bad = [(i, self.row_error(line) or "rejected by the row pattern (a bug)")
                   for i, line in enumerate(lines) if i not in keep]
        if not good:
            return self._columns([], [], bad)
        table = self.read_table(b"\n".join([lines[i].rstrip(b"\r") for i in good]))
        ids, times = self.event_columns(table)
        return ParsedRows(self.raw_of(table), np.asarray(good, np.int64), bad, ids, times)

    def read_table(
        self, buffer: bytes, prefix: tuple[tuple[str, pa.DataType], ...] = ()
    ) -> pa.Table:
        """Valid rows joined by b"\\n" -> a table; `prefix` names and types columns that come
        before the row's (an event record's header fields)."""
        return pa_csv.read_csv(
            io.BytesIO(buffer),
            read_options=pa_csv.ReadOptions(
                column_names=[name for name, _ in prefix] + list(self.columns),
                block_size=1 << 26,
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=self.sep, quote_char=False, double_quote=False
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={**dict(prefix), **self._types},
                strings_can_be_null=False, quoted_strings_can_be_null=False,
            ),
        )  # fmt: skip

    def event_columns(self, table: pa.Table) -> tuple[list[str | None], npt.NDArray[np.int64]]:
        """The schema's event ids and times (ms) of a table from `read_table`."""
        n, schema = table.num_rows, self.schema
        ids: list[str | None] = [None] * n
        times = np.full(n, -1, np.int64)
        if schema.event_id is not None:
            ids = table.column(schema.event_id.name).to_pylist()
        if schema.event_time is not None:
            scale = 1 if schema.event_time.unit == "ms" else 1000
            column = table.column(schema.event_time.name)
            times = column.to_numpy().astype(np.int64) * scale
        return ids, times

    def raw_of(self, table: pa.Table) -> RawColumns:
        """The schema's columns of a table from `read_table`."""
        schema, n = self.schema, table.num_rows
        if n == 0:
            return RawColumns.empty(len(schema.dense), len(schema.categorical), 0, 0)
        label = table.column(schema.label.name).to_numpy().astype(np.int8)
        dense = np.empty((n, len(schema.dense)), dtype=np.float64)
        for j, f in enumerate(schema.dense):
            dense[:, j] = table.column(f.name).to_numpy()
        cats = np.empty((n, len(schema.categorical)), dtype=np.uint64)
        missing = np.empty((n, len(schema.categorical)), dtype=np.bool_)
        for j, cat in enumerate(schema.categorical):
            cats[:, j], missing[:, j] = hex_values(table.column(cat.name).combine_chunks())
        return RawColumns(
            label, dense, cats, missing, np.zeros((n, 0), np.uint64), np.zeros((n, 0), np.int32)
        )
