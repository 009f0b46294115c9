"""MLflow's scoring protocol (`POST /invocations`) -> rows of the served model's schema.

Accepted bodies, as `mlflow models serve` takes them for this model's signature (one column
per field of the feature schema, see `version_model.signature`, or `row` holding a raw row in
the schema's format):

* application/json with exactly one of
  `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}` (an `index` is ignored),
  `{"dataframe_records": [{"<field>": value, ...}, ...]}`,
  `{"instances": ...}` or `{"inputs": ...}` holding records (a list of objects), columns (an
  object of equal-length lists) or raw rows (a list of strings). An optional `params` object
  must be empty. A column absent or a null cell is a missing value (`core.records` says what
  each field kind takes); the label and event columns are ignored; any other column is a 422.
* text/csv: MLflow's CSV (a header line of column names, then comma-separated values; a multi
  field's cell joined by its separator), or raw rows without a header.
* text/plain (and the other raw-row types of /predict): raw rows, one per line.

A request mixing records given by `row` and by field columns is scored in its order.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from stages.common.raw import RawColumns
from stages.publish.core.records import ignored_keys
from stages.publish.core.requests import (
    ROW_COLUMN, RequestError, RequestParser, RequestRows, check_count, raw_rows,
)

_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def json_invocation(body: bytes, max_rows: int, parser: RequestParser) -> RequestRows:
    """An application/json /invocations body -> rows (see the module docstring).

    RequestError(400) for JSON that does not parse or has not exactly one of the keys,
    (422) for bad values, (413) for more than `max_rows` rows."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "the JSON body must be an object")
    keys = [k for k in _KEYS if k in payload]
    extra = sorted(set(payload) - {*_KEYS, "params"})
    if len(keys) != 1 or extra:
        raise RequestError(400, "the JSON body must have exactly one of " + ", ".join(_KEYS)
                           + (f" (unknown key {extra[0]!r})" if extra else ""))
    if payload.get("params"):
        raise RequestError(400, "this model takes no params")
    key, value = keys[0], payload[keys[0]]
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("columns"), list) \
                or not isinstance(value.get("data"), list):
            raise RequestError(400, 'dataframe_split needs "columns" (a list) and "data" '
                                    '(a list of rows)')
        return split_to_rows(value["columns"], value["data"], max_rows, parser)
    if isinstance(value, dict) and key != "dataframe_records":
        return columns_to_rows(value, max_rows, parser)
    if not isinstance(value, list):
        raise RequestError(400, f"{key} must be a list")
    if key != "dataframe_records" and value and all(isinstance(v, str) for v in value):
        return raw_rows(parser, [v.encode() for v in value], max_rows)
    check_count(len(value), max_rows)
    for number, record in enumerate(value, start=1):
        if not isinstance(record, dict):
            raise RequestError(422, f"record {number} is not an object")
    names: set[str] = set().union(*value)
    return columns_to_rows({n: [r.get(n) for r in value] for n in names}, max_rows, parser,
                           len(value))


def split_to_rows(columns: list[Any], data: list[Any], max_rows: int, parser: RequestParser
                  ) -> RequestRows:
    """`dataframe_split` columns and data -> rows."""
    check_count(len(data), max_rows)
    if not all(isinstance(row, list) and len(row) == len(columns) for row in data):
        raise RequestError(422, f"every row of dataframe_split data must be a list of "
                                f"{len(columns)} values (one per column)")
    cells = list(zip(*data))
    return columns_to_rows({str(name): list(col) for name, col in zip(columns, cells)},
                           max_rows, parser, len(data))


def columns_to_rows(columns: Mapping[str, Sequence[Any]], max_rows: int,
                    parser: RequestParser, n: int | None = None) -> RequestRows:
    """Named columns of equal length (absent: all missing), the field columns and/or `row`
    -> rows. A record gives either a raw row or field values (RequestError(422) otherwise)."""
    lengths = {len(col) for col in columns.values()}
    if n is None:
        n = lengths.pop() if len(lengths) == 1 else -1
    if n < 0 or any(length != n for length in lengths):
        raise RequestError(422, "all columns must have the same length")
    check_count(n, max_rows)
    fields = {k: list(v) for k, v in columns.items() if k != ROW_COLUMN}
    given = columns.get(ROW_COLUMN)
    if given is None or all(v is None for v in given):
        return parser.columns(fields, n, max_rows)
    by_row = np.fromiter((v is not None for v in given), dtype=np.bool_, count=n)
    skip = ignored_keys(parser.schema)
    for i in np.flatnonzero(by_row):
        if any(col[i] is not None and not _nan(col[i])
               for k, col in fields.items() if k not in skip):
            raise RequestError(422, f"record {i + 1}: give either {ROW_COLUMN!r} (a raw row) "
                                    "or the field columns, not both")
    texts = [given[i] for i in np.flatnonzero(by_row)]
    if not all(isinstance(t, str) for t in texts):
        raise RequestError(422, f"{ROW_COLUMN!r} must hold strings (raw rows)")
    from_rows = raw_rows(parser, [t.encode() for t in texts], max_rows)
    if by_row.all():
        return from_rows
    rest = np.flatnonzero(~by_row)
    from_fields = parser.columns({k: [col[i] for i in rest] for k, col in fields.items()},
                                 len(rest), max_rows)
    order = np.argsort(np.concatenate([np.flatnonzero(by_row), rest]), kind="stable")
    raw = RawColumns.concat([from_rows.raw, from_fields.raw]).take(order)
    labelled = np.concatenate([from_rows.has_label, from_fields.has_label])[order]
    return RequestRows(raw, labelled)


def _nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def csv_invocation(body: bytes, max_rows: int, parser: RequestParser) -> RequestRows:
    """A text/csv body: MLflow's CSV with a header of column names, or raw rows."""
    head = body.split(b"\n", 1)[0].rstrip(b"\r")
    names = head.decode("utf-8", "replace").split(",")
    known = {*parser.schema.field_names(), ROW_COLUMN}
    if b"\t" in head or not set(names) <= known | ignored_keys(parser.schema) \
            or not set(names) & known:
        return parser.text(body, max_rows)
    try:
        reader = csv.reader(io.StringIO(body.decode("utf-8")))
        header = next(reader)
        data = [row for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RequestError(400, f"the CSV body does not parse: {exc}") from None
    check_count(len(data), max_rows)
    if not all(len(row) == len(header) for row in data):
        raise RequestError(422, f"every CSV row must have {len(header)} values")
    columns = {name: [v or None for v in col] for name, col in zip(header, zip(*data))}
    return columns_to_rows(columns, max_rows, parser, len(data))
