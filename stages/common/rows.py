"""Parsing raw rows of any feature schema into `RawColumns`, with a one-line reason per bad row.

`RowParser.for_schema(schema, header=None)` picks the parser of the schema's format:
- delimited (tsv/csv) by position (`schema.columns()`, `_` = a column to ignore) or, for
  `format.header: true`, by the names of the file's header line (`header`, see `read_header`;
  without one, the columns are in `schema.columns()` order: how the events topic carries them);
  cells are split at the delimiter (no quoting); a row with another number of cells is bad;
- JSON lines: one object per line, each field found by its dotted path (`field.json_path`);
  a path through a value that is not an object is bad.
A delimited schema by position whose fields are all int/float dense and hex categorical (the
Criteo preset) gets `rows_arrow.ArrowRowParser`: a regex generated from the schema decides each
row, pyarrow's CSV reader parses the good ones in columns. The others parse line by line.

What a valid value is, and the reasons, are in `row_values` (one definition for all parsers).
Rules of a row: the label is required; features are optional (missing); declared event fields
are required. Every parser also says "blank line", "not UTF-8: byte 0xNN at offset K" and "a
carriage return inside the row" (a single b"\\r" at the end is dropped).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stages.common.raw import RawColumns
from stages.common.row_values import (
    BadValue,
    CatRule,
    DenseRule,
    EventIdRule,
    EventTimeRule,
    LabelRule,
    MultiRule,
    show,
)
from stages.common.schema import FeatureSchema, SchemaError

#: A row's values: label, dense, categorical (None = missing), multi lists, event id, time.
_Row = tuple[int, list[float], list[int | None], list[list[int]], str | None, int]


@dataclass(frozen=True)
class ParsedRows:
    """The result of parsing lines: `raw` holds the good rows in input order, `good_index[i]` is
    the position in the input of raw row i, `bad` the (position, reason) of the others.
    `event_ids[i]`/`event_time_ms[i]` come from the schema's event fields (None / -1 where the
    schema declares none)."""

    raw: RawColumns
    good_index: npt.NDArray[np.int64]
    bad: list[tuple[int, str]]
    event_ids: list[str | None]
    event_time_ms: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.raw)


def delimiter(schema: FeatureSchema) -> str:
    """The cell delimiter of a delimited schema."""
    return "\t" if schema.format.kind == "tsv" else ","


def read_header(schema: FeatureSchema, line: bytes, source: str = "the source") -> tuple[str, ...]:
    """The column names of a header line, columns not in the schema as `_`. SchemaError when a
    declared field has no column or a column is named twice."""
    names = tuple(n.strip() for n in line.rstrip(b"\r\n").decode("utf-8", "replace")
                  .split(delimiter(schema)))
    declared = set(schema.columns()) - {"_"}
    named = [n for n in names if n in declared]
    twice = sorted({n for n in named if named.count(n) > 1})
    if twice:
        raise SchemaError(f"the header line of {source} names column {twice[0]!r} twice")
    absent = [n for n in schema.columns() if n != "_" and n not in named]
    if absent:
        raise SchemaError(f"the header line of {source} has no column {absent[0]!r} (it names "
                          f"{show(','.join(names), 80)}): fix the file or FRESHREC_SCHEMA")
    return tuple(n if n in declared else "_" for n in names)


def _text(line: bytes) -> str:
    """The line as text without a final b"\\r"; BadValue for the reasons of every format."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line.strip(b"\r"):
        raise BadValue("blank line")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadValue(f"not UTF-8: byte 0x{line[exc.start]:02x} at offset {exc.start}") from None
    if "\r" in text:
        raise BadValue("a carriage return inside the row")
    return text


class RowParser(ABC):
    """Lines of one schema's format -> columns (see the module docstring)."""

    def __init__(self, schema: FeatureSchema, *, hash_strings: bool = True) -> None:
        self.schema = schema
        self.label = LabelRule(schema.label)
        self.dense = [DenseRule(f) for f in schema.dense]
        self.cats = [CatRule(f, hash_strings) for f in schema.categorical]
        self.multi = [MultiRule(f, hash_strings) for f in schema.multi]
        self.event_id = None if schema.event_id is None else EventIdRule(schema.event_id)
        self.event_time = None if schema.event_time is None else EventTimeRule(schema.event_time)
        self._starts = np.cumsum([0] + [f.max_len for f in schema.multi]).tolist()
        self.multi_fields = schema.multi

    @staticmethod
    def for_schema(
        schema: FeatureSchema, header: Sequence[str] | None = None, *, hash_strings: bool = True
    ) -> RowParser:
        """The parser of `schema`; `header`: the column names of a header format's file (from
        `read_header`); None: `schema.columns()` (the event wire order). hash_strings=False:
        str values are not hashed (all 0): for validating rows without using their values."""
        from stages.common.rows_arrow import ArrowRowParser, arrow_columns

        if schema.format.kind == "jsonl":
            return JsonRowParser(schema, hash_strings=hash_strings)
        columns = tuple(header) if header is not None else schema.columns()
        if arrow_columns(schema, columns):
            return ArrowRowParser(schema, columns)
        return DelimitedRowParser(schema, columns, hash_strings=hash_strings)

    @property
    def rewrites(self) -> bool:
        """True when `to_wire` changes rows (a header whose order is not the wire order)."""
        return False

    def to_wire(self, line: bytes) -> bytes:
        """A valid row as the events topic carries it (delimited: in `schema.columns()` order;
        a final b"\\r" dropped)."""
        return line[:-1] if line.endswith(b"\r") else line

    def row_error(self, line: bytes) -> str | None:
        """Why `line` (without its line end) is not a valid row, or None."""
        try:
            self.row(line)
        except BadValue as exc:
            return str(exc)
        return None

    @abstractmethod
    def row(self, line: bytes) -> _Row:
        """The values of one row; BadValue with the reason when it is not valid."""

    def parse(self, lines: Sequence[bytes]) -> ParsedRows:
        """Parse `lines` (without line ends); never raises on bad rows (see ParsedRows)."""
        rows: list[_Row] = []
        good: list[int] = []
        bad: list[tuple[int, str]] = []
        row = self.row
        for i, line in enumerate(lines):
            try:
                rows.append(row(line))
            except BadValue as exc:
                bad.append((i, str(exc)))
            else:
                good.append(i)
        return self._columns(rows, good, bad)

    def _columns(self, rows: list[_Row], good: list[int], bad: list[tuple[int, str]]) -> ParsedRows:
        n, starts = len(rows), self._starts
        label = np.fromiter((r[0] for r in rows), np.int8, n)
        dense = np.array([r[1] for r in rows], np.float64).reshape(n, len(self.dense))
        cats = [r[2] for r in rows]
        cat_values = np.array([[v or 0 for v in c] for c in cats], np.uint64)
        cat_missing = np.array([[v is None for v in c] for c in cats], np.bool_)
        pads = [[0] * f.max_len for f in self.multi_fields]
        multi_values = np.array(
            [[v for values, pad in zip(r[3], pads) for v in (values + pad[len(values):])]
             for r in rows], np.uint64,
        ).reshape(n, starts[-1])  # fmt: skip
        multi_len = np.array([[len(v) for v in r[3]] for r in rows], np.int32)
        multi_len = multi_len.reshape(n, len(self.multi))
        raw = RawColumns(
            label, dense, cat_values.reshape(n, len(self.cats)),
            cat_missing.reshape(n, len(self.cats)), multi_values, multi_len,
        )  # fmt: skip
        times = np.fromiter((r[5] for r in rows), np.int64, n)
        return ParsedRows(raw, np.asarray(good, np.int64), bad, [r[4] for r in rows], times)


class DelimitedRowParser(RowParser):
    """tsv/csv rows, one line at a time (any field kinds)."""

    def __init__(
        self, schema: FeatureSchema, columns: tuple[str, ...], *, hash_strings: bool = True
    ) -> None:
        super().__init__(schema, hash_strings=hash_strings)
        self.columns, self.sep = columns, delimiter(schema)
        where = {name: i for i, name in enumerate(columns) if name != "_"}
        self._label = where[schema.label.name]
        self._dense = [(where[f.name], r) for f, r in zip(schema.dense, self.dense)]
        self._cats = [(where[f.name], r) for f, r in zip(schema.categorical, self.cats)]
        self._multi = [(where[f.name], r) for f, r in zip(schema.multi, self.multi)]
        self._id = -1 if schema.event_id is None else where[schema.event_id.name]
        self._time = -1 if schema.event_time is None else where[schema.event_time.name]
        wire = schema.columns()
        self._order = None if columns == wire else [where.get(name, -1) for name in wire]

    @property
    def rewrites(self) -> bool:
        return self._order is not None

    def to_wire(self, line: bytes) -> bytes:
        line = super().to_wire(line)
        if self._order is None:
            return line
        cells = line.split(self.sep.encode())
        return self.sep.encode().join(cells[i] if i >= 0 else b"" for i in self._order)

    def row(self, line: bytes) -> _Row:
        cells = _text(line).split(self.sep)
        if len(cells) != len(self.columns):
            raise BadValue(f"expected {len(self.columns)} fields, got {len(cells)}")
        return (
            self.label.text(cells[self._label]),
            [rule.text(cells[i]) for i, rule in self._dense],
            [rule.text(cells[i]) for i, rule in self._cats],
            [rule.text(cells[i]) for i, rule in self._multi],
            None if self.event_id is None else self.event_id.text(cells[self._id]),
            -1 if self.event_time is None else self.event_time.text(cells[self._time]),
        )


class JsonRowParser(RowParser):
    """JSON lines (orjson), each field by its dotted path."""

    def __init__(self, schema: FeatureSchema, *, hash_strings: bool = True) -> None:
        super().__init__(schema, hash_strings=hash_strings)
        self._label = _getter(schema.label.json_path)
        self._id = None if schema.event_id is None else _getter(schema.event_id.json_path)
        self._time = None if schema.event_time is None else _getter(schema.event_time.json_path)
        self._dense = [(_getter(f.json_path), r.json) for f, r in zip(schema.dense, self.dense)]
        self._cats = [(_getter(f.json_path), r.json) for f, r in zip(schema.categorical, self.cats)]
        self._multi = [(_getter(f.json_path), r.json) for f, r in zip(schema.multi, self.multi)]

    def row(self, line: bytes) -> _Row:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            _text(line)  # blank, not UTF-8, ...: the reason of every format first
            raise BadValue(f"not valid JSON: {str(exc).split(':', 1)[0]}") from None
        if type(obj) is not dict:
            raise BadValue(f"not a JSON object: {show(line.decode('utf-8', 'replace'))}")
        if b"\r" in line:
            _text(line)
        return (
            self.label.json(self._label(obj)),
            [convert(get(obj)) for get, convert in self._dense],
            [convert(get(obj)) for get, convert in self._cats],
            [convert(get(obj)) for get, convert in self._multi],
            None if self.event_id is None or self._id is None
            else self.event_id.json(self._id(obj)),
            -1 if self.event_time is None or self._time is None
            else self.event_time.json(self._time(obj)),
        )  # fmt: skip


def _getter(path: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    """obj -> the value at `path` (None when absent); BadValue when the path goes through a
    value that is not an object."""
    if len(path) == 1:
        key = path[0]
        return lambda obj: obj.get(key)
    if len(path) == 2:
        outer, inner = path

        def get2(obj: dict[str, Any]) -> Any:
            node = obj.get(outer)
            if node is None:
                return None
            if type(node) is dict:
                return node.get(inner)
            raise BadValue(f"{outer}.{inner}: {outer} is not an object: {show(node)}")

        return get2

    def get(obj: dict[str, Any]) -> Any:
        node: Any = obj
        for depth, key in enumerate(path):
            if type(node) is not dict:
                inner = ".".join(path[:depth])
                raise BadValue(f"{'.'.join(path)}: {inner} is not an object: {show(node)}")
            node = node.get(key)
            if node is None:
                return None
        return node

    return get
