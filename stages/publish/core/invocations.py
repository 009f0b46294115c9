"""MLflow's scoring protocol (`POST /invocations`) -> columns of Criteo rows.

Accepted bodies, as `mlflow models serve` takes them for this model's signature (columns
I1..I13 double, C1..C26 string, or `row` holding a raw row):

* application/json with exactly one of
  `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}` (an `index` is ignored),
  `{"dataframe_records": [{"I1": 3, "C1": "68fd1e64", ...}, ...]}`,
  `{"instances": ...}` or `{"inputs": ...}` holding records (a list of objects), columns (an
  object of equal-length lists) or raw rows (a list of strings). An optional `params` object
  must be empty. A column absent or a null cell is a missing value; I values are integers
  (3 or 3.0; a string of digits too); a `label` column is ignored; any other column is a 422.
* text/csv: MLflow's CSV (a header line of column names, then comma-separated values), or raw
  tab-separated rows without a header.
* text/plain (and the other raw-row types of /predict): raw rows, one per line.

Columns of plain numbers and strings are converted with array operations; anything else takes
the per-record path of `core.requests`, which also says what is wrong.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stages.common.criteo import CAT_NAMES, DENSE_NAMES
from stages.publish.core.requests import (
    HEX_NIBBLE, NIBBLE_SHIFT, ROW_COLUMN, RawColumns, RequestError, body_to_columns, check_count,
    records_to_rows, rows_to_columns,
)

_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_KNOWN = frozenset((*DENSE_NAMES, *CAT_NAMES, ROW_COLUMN, "label"))
_EXACT = 2.0 ** 53  # integers below this convert to float64 exactly, as a raw row's do


def json_invocation(body: bytes, max_rows: int) -> RawColumns:
    """An application/json /invocations body -> columns (see the module docstring).

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
        return split_to_columns(value["columns"], value["data"], max_rows)
    if isinstance(value, dict) and key != "dataframe_records":
        return columns_to_raw(value, max_rows)
    if not isinstance(value, list):
        raise RequestError(400, f"{key} must be a list")
    if key != "dataframe_records" and value and all(isinstance(v, str) for v in value):
        return _raw_rows([v.encode() for v in value], max_rows)
    return records_to_columns(value, max_rows)


def split_to_columns(columns: list[Any], data: list[Any], max_rows: int) -> RawColumns:
    """`dataframe_split` columns and data -> columns."""
    check_count(len(data), max_rows)
    if not all(isinstance(row, list) and len(row) == len(columns) for row in data):
        raise RequestError(422, f"every row of dataframe_split data must be a list of "
                                f"{len(columns)} values (one per column)")
    cells = list(zip(*data))
    return columns_to_raw({str(name): list(col) for name, col in zip(columns, cells)},
                          max_rows, len(data))


def records_to_columns(records: list[Any], max_rows: int) -> RawColumns:
    """Records (a list of objects) -> columns."""
    check_count(len(records), max_rows)
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise RequestError(422, f"record {number} is not an object")
    names: set[str] = set().union(*records)
    return columns_to_raw({n: [r.get(n) for r in records] for n in names}, max_rows,
                          len(records))


def columns_to_raw(columns: Mapping[str, Sequence[Any]], max_rows: int,
                   n: int | None = None) -> RawColumns:
    """Named columns of equal length (absent: all missing) -> columns of the model."""
    unknown = sorted(set(columns) - _KNOWN)
    if unknown:
        raise RequestError(422, f"unknown column {unknown[0]!r}: send I1..I13, C1..C26 or "
                                f"{ROW_COLUMN!r}")
    lengths = {len(col) for col in columns.values()}
    if n is None:
        n = lengths.pop() if len(lengths) == 1 else -1
    if n < 0 or any(length != n for length in lengths):
        raise RequestError(422, "all columns must have the same length")
    check_count(n, max_rows)
    fast = None if ROW_COLUMN in columns else _fast_columns(columns, n)
    if fast is not None:
        return fast
    records = [dict(zip(columns, values)) for values in zip(*columns.values())]
    return _records_path(records, max_rows)


def _records_path(records: list[dict[str, Any]], max_rows: int) -> RawColumns:
    """The per-record path: integral floats become integers (MLflow sends I columns as
    double), then `records_to_rows` validates each record and names what is wrong."""
    cleaned = [{k: int(v) if isinstance(v, float) and v.is_integer() else v
                for k, v in r.items()} for r in records]
    return rows_to_columns(records_to_rows(cleaned), max_rows)


def _fast_columns(columns: Mapping[str, Sequence[Any]], n: int) -> RawColumns | None:
    """Columns of plain values -> model columns with a few array operations over all the
    cells at once (per column they cost more than a 1-row request); None when any value
    needs the per-record path (a string number, a non-integral or huge number, a bad id)."""
    absent = [None] * n
    dense_cells = list(chain.from_iterable(columns.get(k, absent) for k in DENSE_NAMES))
    if not set(map(type, dense_cells)) <= {int, float, type(None)}:
        return None
    dense = np.array(dense_cells, dtype=np.float64).reshape(len(DENSE_NAMES), n).T  # None: NaN
    present = dense[~np.isnan(dense)]
    if not np.all((np.abs(present) < _EXACT) & (present == np.floor(present))):
        return None
    parsed = _hex_cells(list(chain.from_iterable(columns.get(k, absent) for k in CAT_NAMES)))
    if parsed is None:
        return None
    cats, missing = parsed
    return RawColumns(dense=np.ascontiguousarray(dense),
                      cats=np.ascontiguousarray(cats.reshape(len(CAT_NAMES), n).T),
                      cat_missing=np.ascontiguousarray(missing.reshape(len(CAT_NAMES), n).T),
                      label=np.zeros(n, dtype=np.int8), has_label=np.zeros(n, dtype=np.bool_))


def _hex_cells(cells: list[Any]) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.bool_]] | None:
    """Strings of 8 lowercase hex digits or None -> (uint32 values, missing), else None."""
    if not set(map(type, cells)) <= {str, type(None)}:
        return None
    missing = np.fromiter((v is None for v in cells), dtype=np.bool_, count=len(cells))
    present = [v for v in cells if v is not None]
    if not set(map(len, present)) <= {8}:
        return None
    try:
        digits = np.frombuffer("".join(present).encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        return None
    nibbles = HEX_NIBBLE[digits].reshape(-1, 8)
    if np.any(nibbles >= 16):
        return None
    values = np.zeros(len(cells), dtype=np.uint32)
    values[~missing] = np.bitwise_or.reduce(nibbles.astype(np.uint32) << NIBBLE_SHIFT, axis=1)
    return values, missing


def _raw_rows(rows: list[bytes], max_rows: int) -> RawColumns:
    check_count(len(rows), max_rows)
    if any(b"\n" in row.rstrip(b"\r\n") for row in rows):
        raise RequestError(422, "a raw row contains a newline")
    return body_to_columns(b"\n".join(row.rstrip(b"\r\n") for row in rows), max_rows)


def csv_invocation(body: bytes, max_rows: int) -> RawColumns:
    """A text/csv body: MLflow's CSV with a header of column names, or raw rows."""
    head = body.split(b"\n", 1)[0].rstrip(b"\r")
    names = head.decode("utf-8", "replace").split(",")
    if b"\t" in head or not set(names) & _KNOWN:
        return body_to_columns(body, max_rows)
    try:
        reader = csv.reader(io.StringIO(body.decode("utf-8")))
        header = next(reader)
        data = [row for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RequestError(400, f"the CSV body does not parse: {exc}") from None
    check_count(len(data), max_rows)
    if not all(len(row) == len(header) for row in data):
        raise RequestError(422, f"every CSV row must have {len(header)} values")
    columns: dict[str, list[Any]] = {}
    for name, col in zip(header, zip(*data)):
        columns[name] = [_csv_number(v) if name in DENSE_NAMES else (v or None) for v in col]
    return columns_to_raw(columns, max_rows, len(data))


def _csv_number(text: str) -> Any:
    """A CSV cell of an I column: empty -> None, "3" or "3.0" -> 3, else the text (refused
    with its reason on the per-record path)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and abs(value) < _EXACT else text
