"""Prediction requests -> model inputs, by the served model's feature schema, with the 4xx
reason when a request is wrong.

A `RequestParser` is bound to one schema (the one the served version carries). Forms
(serving, `core.invocations` and the MLflow pyfunc model share them):

* raw rows in the schema's own format (`schema.format`: a tab/comma-separated row, or one JSON
  object per line), one per line, parsed by the schema's `RowParser` (the same validation as
  ingest). The label is optional: a delimited row may lack the label's column, a JSON row the
  label's key. Empty lines are skipped; a trailing '\\r' is tolerated.
* JSON `{"rows": ["<row>", ...]}` with rows as above, or `{"instances": [record, ...]}` with
  records keyed by the schema's field names (`core.records`: absent or null = missing, a multi
  field as a list; the label and event fields are ignored; any other key is refused).
* records / named columns (MLflow's forms, `core.invocations`), and the column `row` holding
  one raw row per record.

Row numbers in messages are 1-based, counting the rows (or records) as sent, empty lines
included.

Speed: for a Criteo-like schema (`text_layout`: tab-separated by position, the label, int dense
fields, then hex categorical fields, nothing else) a body of valid rows is validated and parsed
in one pass of NumPy array operations over its bytes (`_parse_body`, no Python per row or per
field), the layout generated from the schema; a body it does not take (a bad row, a short hex
value) goes to the RowParser, which accepts a superset and finds the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stages.common.errors import PublishError
from stages.common.layout import Transform, compile_layout
from stages.common.raw import RawColumns
from stages.common.schema import FeatureSchema
from stages.publish.core.records import RecordError, columns_to_raw, records_to_raw

_TAB, _NL, _CR, _MINUS, _ZERO = 9, 10, 13, 45, 48
_INT_WIDTH = 19  # '-' and 18 digits: the longest integer field of the array parser
HEX_NIBBLE = np.full(256, 255, dtype=np.uint8)
HEX_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
NIBBLE_SHIFT = np.arange(28, -1, -4, dtype=np.uint64)
# The record key (a column of the MLflow signature) of a raw row.
ROW_COLUMN = "row"


class RequestError(PublishError):
    """A request serving refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelInputs:
    """Inputs of n rows: dense float32[n, n_dense] (transformed), ids uint64[n, n_slots], label
    int8[n] (as sent, 0 where the row had none; `has_label` says which rows had one)."""

    dense: npt.NDArray[np.float32]
    ids: npt.NDArray[np.uint64]
    label: npt.NDArray[np.int8]
    has_label: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class RequestRows:
    """Parsed rows before the transform: `raw` (label 0 where none was sent), `has_label`."""

    raw: RawColumns
    has_label: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.raw)


def check_count(n: int, max_rows: int) -> None:
    if n == 0:
        raise RequestError(422, "no rows in the request")
    if n > max_rows:
        raise RequestError(413, f"too many rows: {n} (at most {max_rows} per request)")


@dataclass(frozen=True)
class TextLayout:
    """A Criteo-like row: label, `n_dense` integers, `n_cats` 8-hex-digit values, by tab."""

    n_dense: int
    n_cats: int

    @property
    def n_fields(self) -> int:
        return 1 + self.n_dense + self.n_cats


def text_layout(schema: FeatureSchema) -> TextLayout | None:
    """The array parser's layout of `schema`, or None when its rows are not Criteo-like."""
    fmt = schema.format
    dense, cats = schema.dense, schema.categorical
    if fmt.kind != "tsv" or fmt.header or schema.multi or schema.event_id or schema.event_time:
        return None
    if any(f.type != "int" for f in dense) or any(f.type != "hex" for f in cats):
        return None
    order = (schema.label.name, *(f.name for f in dense), *(f.name for f in cats))
    return TextLayout(len(dense), len(cats)) if schema.columns() == order else None


def _gather(buf: npt.NDArray[np.uint8], starts: npt.NDArray[np.intp], width: int
            ) -> npt.NDArray[np.uint8]:
    """buf[starts[..., None] + 0..width-1]; `buf` ends with at least `width` padding bytes,
    so every window is inside it (bytes past a field are masked by callers)."""
    return np.lib.stride_tricks.sliding_window_view(buf, width)[starts]


def _parse_body(body: bytes, layout: TextLayout) -> RequestRows | None:
    """Rows one per line (with or without the label, empty lines skipped, one trailing '\\r'
    each) -> columns, with array operations only; None when the body has no row or any row is
    not one the array parser takes (then the RowParser says why, or parses it)."""
    n_fields, n_dense = layout.n_fields, layout.n_dense
    # the padding keeps every fixed-width window of `_gather` inside the buffer
    buf = np.frombuffer(b"".join((body, b"\n", bytes(_INT_WIDTH))), dtype=np.uint8)
    ends = np.flatnonzero(buf == _NL)
    starts = np.concatenate(([0], ends[:-1] + 1))
    ends = ends - ((ends > starts) & (buf[ends - 1] == _CR))
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if len(starts) == 0:
        return None
    tabs = np.flatnonzero(buf == _TAB)
    first_tab = np.searchsorted(tabs, starts)
    n_tabs = np.searchsorted(tabs, ends) - first_tab
    if not np.all((n_tabs == n_fields - 1) | (n_tabs == n_fields - 2)):
        return None
    skip = (n_tabs == n_fields - 2).astype(np.intp)  # 1: no label, field j is the line's j-1
    k = np.arange(n_fields)[None, :] - skip[:, None]  # the field's index within its line
    # tab_at: the tab after field k; it runs from -2 to len(tabs), which the sentinel and
    # negative indexing keep in bounds (those cells are replaced by the line bounds)
    tab_at = first_tab[:, None] + k
    tabs = np.append(tabs, 0)
    field_end = np.where(k >= n_tabs[:, None], ends[:, None], tabs[tab_at])
    field_start = np.where(k <= 0, starts[:, None], tabs[tab_at - 1] + 1)
    length = field_end - field_start
    n = len(starts)
    # label: one digit 0/1 when present
    label_char = buf[field_start[:, 0]]
    has_label = skip == 0
    if not np.all(~has_label | ((length[:, 0] == 1) & ((label_char == _ZERO) |
                                                       (label_char == _ZERO + 1)))):
        return None
    label = np.where(has_label, label_char.astype(np.int16) - _ZERO, 0).astype(np.int8)
    dense = _dense_fields(buf, field_start[:, 1:1 + n_dense], length[:, 1:1 + n_dense])
    if dense is None:
        return None
    cats = _cat_fields(buf, field_start[:, 1 + n_dense:], length[:, 1 + n_dense:])
    if cats is None:
        return None
    values, missing = cats
    raw = RawColumns(label, dense.reshape(n, n_dense), values, missing,
                     np.zeros((n, 0), np.uint64), np.zeros((n, 0), np.int32))
    return RequestRows(raw, has_label)


def _dense_fields(buf: npt.NDArray[np.uint8], start: npt.NDArray[np.intp],
                  length: npt.NDArray[np.intp]) -> npt.NDArray[np.float64] | None:
    """Integer fields `-?[0-9]{1,18}` or empty -> float64 (NaN when empty); None if any is
    not one of those."""
    if length.size == 0:
        return np.zeros(length.shape, dtype=np.float64)
    width = int(length.max())
    if width > _INT_WIDTH:
        return None
    chars = _gather(buf, start, max(width, 1))
    negative = (length > 0) & (chars[..., 0] == _MINUS)
    n_digits = length - negative
    if np.any((length > 0) & ((n_digits < 1) | (n_digits > 18))):
        return None
    digits = chars - np.uint8(_ZERO)  # uint8: a non-digit wraps to > 9
    magnitude = np.zeros(length.shape, dtype=np.int64)
    for position in range(width):  # Horner over the character positions (a few)
        inside = (position < length) & ~((position == 0) & negative)
        digit = digits[..., position]
        if np.any(inside & (digit > 9)):
            return None
        magnitude = np.where(inside, magnitude * 10 + digit, magnitude)
    value = np.where(negative, -magnitude, magnitude).astype(np.float64)
    return np.where(length > 0, value, np.nan)


def _cat_fields(buf: npt.NDArray[np.uint8], start: npt.NDArray[np.intp],
                length: npt.NDArray[np.intp]
                ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]] | None:
    """Fields of 8 lowercase hex digits or empty -> (values, missing); None if any is not."""
    missing = length == 0
    if not np.all(missing | (length == 8)):
        return None
    nibbles = HEX_NIBBLE[_gather(buf, start, 8)]
    if not np.all(missing[..., None] | (nibbles < 16)):
        return None
    nibbles = np.where(missing[..., None], 0, nibbles).astype(np.uint64)
    values = np.bitwise_or.reduce(nibbles << NIBBLE_SHIFT, axis=-1).astype(np.uint64)
    return values, missing


class RequestParser:
    """Requests -> model inputs for one feature schema (see the module docstring). Built once
    per served model; `default_dim` is the model's embedding dimension (ids do not depend on
    it)."""

    def __init__(self, schema: FeatureSchema, default_dim: int = 8) -> None:
        self.schema = schema
        self.layout = compile_layout(schema, default_dim)
        self.transform = Transform(schema, self.layout)
        self.text_layout = text_layout(schema)
        self._row_parser: Any = None
        fmt = schema.format
        self._delimiter = {"tsv": b"\t", "csv": b","}.get(fmt.kind)
        columns = schema.columns()
        self._n_columns = len(columns)
        # what a request may leave out: the label and the event fields, by placeholders
        fills = [(f, v) for f, v in ((schema.label, 0), (schema.event_id, "request:0"),
                                     (schema.event_time, 0)) if f is not None]
        self._fill_paths = fills
        by_position = self._delimiter is not None and not fmt.header
        self._label_column = columns.index(schema.label.name) if by_position else None
        self._fill_columns = sorted(
            (columns.index(f.name), str(v).encode()) for f, v in fills
            if by_position and f.name in columns)

    @property
    def row_parser(self) -> Any:
        """The schema's `RowParser` (stages.common.rows), made on first use."""
        if self._row_parser is None:
            from stages.common.rows import RowParser

            self._row_parser = RowParser.for_schema(self.schema)
        return self._row_parser

    def inputs(self, rows: RequestRows) -> ModelInputs:
        """The model inputs of parsed rows (`layout.Transform`)."""
        return ModelInputs(dense=self.transform.dense(rows.raw), ids=self.transform.ids(rows.raw),
                           label=rows.raw.label, has_label=rows.has_label)

    def text(self, body: bytes, max_rows: int) -> RequestRows:
        """Raw rows, one per line -> rows. RequestError(422) names the first bad row and the
        reason; (413) when more than `max_rows` rows, (422) when none."""
        if self.text_layout is not None:
            parsed = _parse_body(body, self.text_layout)
            if parsed is not None and len(parsed) <= max_rows:
                return parsed
        return self.rows(body.split(b"\n"), max_rows)

    def rows(self, lines: list[bytes], max_rows: int) -> RequestRows:
        """Raw rows (one each, no newline inside) -> rows, by the schema's RowParser."""
        numbers: list[int] = []
        prepared: list[bytes] = []
        labelled: list[bool] = []
        for number, line in enumerate(lines, start=1):
            row = line.rstrip(b"\r\n")
            if not row or (self._delimiter is None and not row.strip()):
                continue  # (a delimited row of empty cells is a row of missing values)
            row, has_label = self._with_label(row)
            numbers.append(number)
            prepared.append(row)
            labelled.append(has_label)
            if len(prepared) > max_rows:
                break
        check_count(len(prepared), max_rows)
        parsed = self.row_parser.parse(prepared)
        if parsed.bad:
            index, reason = min(parsed.bad)
            raise RequestError(422, f"row {numbers[index]}: {reason}")
        return RequestRows(parsed.raw, np.asarray(labelled, dtype=np.bool_))

    def _with_label(self, row: bytes) -> tuple[bytes, bool]:
        """`row` with placeholders where it lacks the label (0) or the event fields (a request
        is no event: ids and times are not read), and whether it had its label."""
        if self._delimiter is not None:
            n_cells = row.count(self._delimiter) + 1
            fill = [(i, value) for i, value in self._fill_columns
                    if n_cells == self._n_columns - len(self._fill_columns) or
                    (n_cells == self._n_columns - 1 and i == self._label_column)]
            if not fill:
                return row, True
            cells = row.split(self._delimiter)
            for i, value in fill:
                cells.insert(i, value)
            return self._delimiter.join(cells), False
        try:
            event = orjson.loads(row)
        except orjson.JSONDecodeError:
            return row, True  # the RowParser names the problem
        if not isinstance(event, dict):
            return row, True
        had_label = True
        for field, placeholder in self._fill_paths:
            node = event
            *parents, leaf = field.json_path
            for key in parents:
                node = node.setdefault(key, {}) if isinstance(node, dict) else None
            if isinstance(node, dict) and node.get(leaf) is None:
                node[leaf] = placeholder
                had_label = had_label and field is not self.schema.label
        return orjson.dumps(event), had_label

    def records(self, records: list[Any], max_rows: int) -> RequestRows:
        """Records keyed by field names (`core.records`) -> rows; labels are not read."""
        check_count(len(records), max_rows)
        try:
            raw = records_to_raw(self.schema, records)
        except RecordError as exc:
            raise RequestError(422, str(exc)) from None
        return RequestRows(raw, np.zeros(len(raw), dtype=np.bool_))

    def columns(self, columns: dict[str, list[Any]], n: int, max_rows: int) -> RequestRows:
        """Named columns of `n` cells (records in columns) -> rows."""
        check_count(n, max_rows)
        try:
            raw = columns_to_raw(self.schema, columns, n)
        except RecordError as exc:
            raise RequestError(422, str(exc)) from None
        return RequestRows(raw, np.zeros(n, dtype=np.bool_))


def text_to_inputs(body: bytes, max_rows: int, parser: RequestParser) -> ModelInputs:
    """A text body (UTF-8 rows, one per line) -> inputs (see `RequestParser.text`)."""
    return parser.inputs(parser.text(body, max_rows))


def json_to_inputs(body: bytes, max_rows: int, parser: RequestParser) -> ModelInputs:
    """A JSON body (`rows` or `instances`, see the module docstring) -> inputs.

    RequestError(400) for JSON that does not parse or has neither key, (422) for bad rows."""
    try:
        payload = orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or ("rows" in payload) == ("instances" in payload):
        raise RequestError(400, 'the JSON body must be an object with "rows" or "instances"')
    items = payload.get("rows", payload.get("instances"))
    if not isinstance(items, list):
        raise RequestError(400, '"rows" / "instances" must be a list')
    check_count(len(items), max_rows)
    if "instances" in payload:
        return parser.inputs(parser.records(items, max_rows))
    if not all(isinstance(r, str) for r in items):
        raise RequestError(422, f'"rows" must be a list of strings (raw '
                                f'{parser.schema.format.kind} rows)')
    return parser.inputs(raw_rows(parser, [r.encode() for r in items], max_rows))


def raw_rows(parser: RequestParser, rows: list[bytes], max_rows: int) -> RequestRows:
    """A list of raw rows (each one line) -> rows, by the array parser when it takes them."""
    check_count(len(rows), max_rows)
    for number, row in enumerate(rows, start=1):
        if b"\n" in row.rstrip(b"\r\n"):
            raise RequestError(422, f"row {number} contains a newline")
    return parser.text(b"\n".join(row.rstrip(b"\r\n") for row in rows), max_rows)
