"""Records keyed by a feature schema's field names -> raw columns (`stages.common.raw`).

What /predict's `instances`, MLflow's column forms and the pyfunc model's DataFrame hold: one
value per field name of the schema (`schema.field_names()`), absent or null = missing.

    dense int/float    a number, or a string of one (an `int` field's must be integral);
                       NaN counts as missing (pandas' float columns)
    categorical hex    a string of 1 to 8 hex digits: its value
    categorical int    an integer (an integral float or a string of digits too): as uint64
    categorical str    a string (an integer is taken as its decimal text): `string_value`
    multi              a list of values of its type (the first `max_len` kept; null values
                       skipped), or one string joined by the field's `separator`

The label, event-id and event-time fields may be given and are ignored; any other key is a
422. Plain columns (numbers, 8-digit lowercase hex strings) convert with array operations; the
per-cell path converts the rest and names the first bad value ("record 3: price must be a
number, got 'x'"). Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from stages.common.raw import RawColumns, string_value
from stages.common.schema import CategoricalField, FeatureSchema, MultiField

_HEX_NIBBLE = np.full(256, 255, dtype=np.uint8)
_HEX_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_NIBBLE_SHIFT = np.arange(28, -1, -4, dtype=np.uint64)
_EXACT = 2.0 ** 53  # integers below this convert to float64 exactly
_U64 = 1 << 64
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class RecordError(ValueError):
    """A bad value; the message names the record (1-based) and the field."""


def ignored_keys(schema: FeatureSchema) -> frozenset[str]:
    """Keys a record may carry that are not model inputs (label, event id and time)."""
    return frozenset(f.name for f in (schema.label, schema.event_id, schema.event_time)
                     if f is not None)


def _number(field: str, integral: bool, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value) if value.strip() else None
        except ValueError:
            raise ValueError(f"{field} must be a number, got {value[:40]!r}") from None
        if value is None:
            return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{field} must be a number, got {str(value)[:40]!r}")
    out = float(value)
    if math.isinf(out):
        raise ValueError(f"{field} must be finite, got {out}")
    if integral and not math.isnan(out) and not out.is_integer():
        raise ValueError(f"{field} must be an integer, got {value!r}")
    return out


def _id_value(field: CategoricalField, value: Any) -> int:
    """The 64-bit value of one categorical value (see the module docstring)."""
    name = field.name
    if field.type == "hex":
        if not isinstance(value, str) or not 1 <= len(value) <= 8 or set(value) - _HEX_DIGITS:
            raise ValueError(f"{name} must be a string of 1 to 8 hex digits, "
                             f"got {str(value)[:40]!r}")
        return int(value, 16)
    if field.type == "int":
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or not -(1 << 63) <= int(value) < _U64:
            raise ValueError(f"{name} must be a 64-bit integer, got {str(value)[:40]!r}")
        return int(value) % _U64
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = str(int(value))
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {str(value)[:40]!r}")
    return string_value(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _multi_values(field: MultiField, value: Any) -> list[int]:
    if isinstance(value, str):
        items: Sequence[Any] = [v for v in value.split(field.separator) if v]
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    else:
        raise ValueError(f"{field.name} must be a list, got {str(value)[:40]!r}")
    return [_id_value(field, v) for v in items if not _missing(v)][: field.max_len]


def _multi_cell(field: MultiField) -> Callable[[Any], list[int]]:
    return lambda value: [] if _missing(value) else _multi_values(field, value)


def _per_cell(cells: Sequence[Any], convert: Callable[[Any], Any]) -> list[Any]:
    out = []
    for number, value in enumerate(cells, start=1):
        try:
            out.append(convert(value))
        except ValueError as exc:
            raise RecordError(f"record {number}: {exc}") from None
    return out


def _dense_column(name: str, integral: bool, cells: Sequence[Any]) -> npt.NDArray[np.float64]:
    if set(map(type, cells)) <= {int, float, type(None)}:
        col = np.array(cells, dtype=np.float64)  # None -> NaN
        present = col[~np.isnan(col)]
        if np.all(np.abs(present) < _EXACT) and (
                not integral or np.all(present == np.floor(present))):
            return col
    return np.array(_per_cell(cells, lambda v: math.nan if v is None else
                              _number(name, integral, v)), dtype=np.float64)


def _all_dense(schema: FeatureSchema, columns: Mapping[str, Sequence[Any]], n: int
               ) -> npt.NDArray[np.float64] | None:
    """Every dense column at once when all cells are plain numbers or None (exact, integral
    for int fields); None otherwise."""
    absent: list[Any] = [None] * n
    cells = list(chain.from_iterable(columns.get(f.name, absent) for f in schema.dense))
    if not set(map(type, cells)) <= {int, float, type(None)}:
        return None
    dense = np.array(cells, dtype=np.float64).reshape(len(schema.dense), n).T  # None: NaN
    integral = np.asarray([f.type == "int" for f in schema.dense], dtype=np.bool_)
    with np.errstate(invalid="ignore"):
        bad = (np.abs(dense) >= _EXACT) | (integral & (dense != np.floor(dense)))
    if np.any(bad & ~np.isnan(dense)):
        return None
    return np.ascontiguousarray(dense)


def _hex8_column(cells: Sequence[Any]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]] | None:
    """Strings of 8 lowercase hex digits or None -> (values, missing); None for anything else."""
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
    nibbles = _HEX_NIBBLE[digits].reshape(-1, 8)
    if np.any(nibbles >= 16):
        return None
    values = np.zeros(len(cells), dtype=np.uint64)
    values[~missing] = np.bitwise_or.reduce(nibbles.astype(np.uint64) << _NIBBLE_SHIFT, axis=1)
    return values, missing


def _cat_column(field: CategoricalField, cells: Sequence[Any]
                ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    if field.type == "hex":
        fast = _hex8_column(cells)
        if fast is not None:
            return fast
    values = _per_cell(cells, lambda v: None if _missing(v) else _id_value(field, v))
    missing = np.fromiter((v is None for v in values), dtype=np.bool_, count=len(values))
    return np.array([0 if v is None else v for v in values], dtype=np.uint64), missing


def columns_to_raw(schema: FeatureSchema, columns: Mapping[str, Sequence[Any]], n: int
                   ) -> RawColumns:
    """Named columns of `n` cells each (an absent column: all missing) -> raw columns.
    RecordError names an unknown column or the first bad value."""
    known = set(schema.field_names())
    unknown = sorted(set(columns) - known - ignored_keys(schema))
    if unknown:
        raise RecordError(f"unknown field {unknown[0]!r}: this model's fields are "
                          + ", ".join(schema.field_names()))
    absent: list[Any] = [None] * n
    dense = _all_dense(schema, columns, n)
    if dense is None:  # the per-column path, which also names a bad value
        dense = np.empty((n, len(schema.dense)), dtype=np.float64)
        for j, field in enumerate(schema.dense):
            dense[:, j] = _dense_column(field.name, field.type == "int",
                                        columns.get(field.name, absent))
    n_cat = len(schema.categorical)
    cat_values = np.empty((n, n_cat), dtype=np.uint64)
    cat_missing = np.empty((n, n_cat), dtype=np.bool_)
    hex_cols = [j for j, f in enumerate(schema.categorical) if f.type == "hex"]
    # all 8-digit hex columns in one pass: per column, the array calls cost more than a row
    fast = _hex8_column(list(chain.from_iterable(
        columns.get(schema.categorical[j].name, absent) for j in hex_cols)))
    if fast is not None:
        cat_values[:, hex_cols] = fast[0].reshape(len(hex_cols), n).T
        cat_missing[:, hex_cols] = fast[1].reshape(len(hex_cols), n).T
    for j, cat in enumerate(schema.categorical):
        if fast is None or cat.type != "hex":
            cat_values[:, j], cat_missing[:, j] = _cat_column(cat, columns.get(cat.name, absent))
    width = sum(f.max_len for f in schema.multi)
    multi_values = np.zeros((n, width), dtype=np.uint64)
    multi_len = np.zeros((n, len(schema.multi)), dtype=np.int32)
    start = 0
    for k, multi in enumerate(schema.multi):
        lists = _per_cell(columns.get(multi.name, absent), _multi_cell(multi))
        for i, values in enumerate(lists):
            multi_values[i, start:start + len(values)] = values
            multi_len[i, k] = len(values)
        start += multi.max_len
    return RawColumns(np.zeros(n, dtype=np.int8), dense, cat_values, cat_missing,
                      multi_values, multi_len)


def records_to_raw(schema: FeatureSchema, records: Sequence[Any]) -> RawColumns:
    """A list of objects keyed by field names -> raw columns (RecordError when one is not an
    object, or as `columns_to_raw`)."""
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise RecordError(f"record {number} is not an object")
    names: set[str] = set().union(*records) if records else set()
    return columns_to_raw(schema, {k: [r.get(k) for r in records] for k in names}, len(records))
