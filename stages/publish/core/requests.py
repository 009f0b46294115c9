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

Speed: for a Criteo-like schema a body of valid rows is parsed without the RowParser
(`core.text_rows`: NumPy array operations over the whole body, or one regular expression per
row for a body of a few rows); a body they do not take (a bad row, a short hex value) goes to
the RowParser, which accepts a superset and finds the reason.
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
from stages.publish.core.text_rows import FEW_ROWS_BYTES, RequestRows, parse_body, parse_few, text_layout

__all__ = ["RequestRows"]  # re-exported: `core.invocations` and callers import it from here

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


def check_count(n: int, max_rows: int) -> None:
    if n == 0:
        raise RequestError(422, "no rows in the request")
    if n > max_rows:
        raise RequestError(413, f"too many rows: {n} (at most {max_rows} per request)")


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
            parse = parse_few if len(body) <= FEW_ROWS_BYTES else parse_body
            parsed = parse(body, self.text_layout)
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


def text_to_rows(body: bytes, max_rows: int, parser: RequestParser) -> RequestRows:
    """A text body (UTF-8 rows, one per line) -> rows (`RequestParser.text`)."""
    return parser.text(body, max_rows)


def json_to_inputs(body: bytes, max_rows: int, parser: RequestParser) -> ModelInputs:
    """A JSON body (`rows` or `instances`, see the module docstring) -> inputs
    (`json_to_rows`)."""
    return parser.inputs(json_to_rows(body, max_rows, parser))


def json_to_rows(body: bytes, max_rows: int, parser: RequestParser) -> RequestRows:
    """A JSON body (`rows` or `instances`, see the module docstring) -> rows.

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
        return parser.records(items, max_rows)
    if not all(isinstance(r, str) for r in items):
        raise RequestError(422, f'"rows" must be a list of strings (raw '
                                f'{parser.schema.format.kind} rows)')
    return raw_rows(parser, [r.encode() for r in items], max_rows)


def raw_rows(parser: RequestParser, rows: list[bytes], max_rows: int) -> RequestRows:
    """A list of raw rows (each one line) -> rows, by the array parser when it takes them."""
    check_count(len(rows), max_rows)
    for number, row in enumerate(rows, start=1):
        if b"\n" in row.rstrip(b"\r\n"):
            raise RequestError(422, f"row {number} contains a newline")
    return parser.text(b"\n".join(row.rstrip(b"\r\n") for row in rows), max_rows)
