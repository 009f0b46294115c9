"""Prediction requests -> model inputs, with the 4xx reason when the request is wrong.

Accepted forms (serving and the MLflow pyfunc model share them):

* raw Criteo rows, one per line, tab-separated: 40 fields (a label first, ignored for the
  prediction) or 39 fields (I1..I13, C1..C26, no label). Empty lines are skipped; a trailing
  '\\r' is tolerated. Values follow `criteo.row_error` (integers; 8 lowercase hex digits).
* JSON `{"rows": ["<row>", ...]}` with rows as above, or
  `{"instances": [{"I1": 3, "C1": "68fd1e64", ...}, ...]}` where an absent key or null is a
  missing value, integers may be given as numbers or strings, an optional "label" is ignored,
  and any other key is refused.
* records (the MLflow pyfunc model's column form, `records_to_rows`): dicts with the keys
  I1..I13, C1..C26 as in `instances`, or with the key `row` holding one raw row as above.

Row numbers in messages are 1-based, counting the rows (or instances) as sent, empty lines
included.

Speed: a body of valid rows is validated and parsed in one pass of NumPy array operations over
its bytes (`_parse_body`, no Python per row or per field); only a body with a bad row takes the
per-row path (`row_error`), which finds the reason. Both give the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import numpy.typing as npt

from stages.common.criteo import (
    CAT_NAMES, DENSE_NAMES, N_DENSE, N_FIELDS, parse_valid_rows, row_error,
)
from stages.common.errors import PublishError
from stages.common.transform import dense_transform
from stages.common.hashing import feature_ids

_INSTANCE_KEYS = frozenset(("label", *DENSE_NAMES, *CAT_NAMES))
_TAB, _NL, _CR, _MINUS, _ZERO = 9, 10, 13, 45, 48
_INT_WIDTH = 19  # '-' and 18 digits: the longest valid integer field
HEX_NIBBLE = np.full(256, 255, dtype=np.uint8)
HEX_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
NIBBLE_SHIFT = np.arange(28, -1, -4, dtype=np.uint32)
# The record key (a column of the MLflow signature) of a raw row.
ROW_COLUMN = "row"


class RequestError(PublishError):
    """A request serving refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelInputs:
    """Inputs of n rows: dense float32[n, 13] (transformed), ids uint64[n, 26], label int8[n]
    (as sent, 0 where the row had none; `has_label` says which rows had one)."""

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


@dataclass(frozen=True)
class RawColumns:
    """n rows in columns before the transform: dense float64[n, 13] (NaN: missing), cats
    uint32[n, 26] (the 8 hex digits as a number), cat_missing bool[n, 26], label int8[n],
    has_label bool[n]."""

    dense: npt.NDArray[np.float64]
    cats: npt.NDArray[np.uint32]
    cat_missing: npt.NDArray[np.bool_]
    label: npt.NDArray[np.int8]
    has_label: npt.NDArray[np.bool_]

    def inputs(self) -> ModelInputs:
        """The model inputs of these rows (`transform.dense_transform`, `hashing.feature_ids`)."""
        return ModelInputs(dense=dense_transform(self.dense),
                           ids=feature_ids(self.cats, self.cat_missing),
                           label=self.label, has_label=self.has_label)


def _gather(buf: npt.NDArray[np.uint8], starts: npt.NDArray[np.intp], width: int
            ) -> npt.NDArray[np.uint8]:
    """buf[starts[..., None] + 0..width-1]; `buf` ends with at least `width` padding bytes,
    so every window is inside it (bytes past a field are masked by callers)."""
    return np.lib.stride_tricks.sliding_window_view(buf, width)[starts]


def _parse_body(body: bytes) -> RawColumns | None:
    """Rows one per line (39 or 40 fields, empty lines skipped, one trailing '\\r' each) ->
    columns, with array operations only; None when the body has no row or any row is not
    valid (then the per-row path says why)."""
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
    if not np.all((n_tabs == N_FIELDS - 1) | (n_tabs == N_FIELDS - 2)):
        return None
    skip = (n_tabs == N_FIELDS - 2).astype(np.intp)  # 1: no label, field j is the line's j-1
    k = np.arange(N_FIELDS)[None, :] - skip[:, None]  # the field's index within its line
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
    dense = _dense_fields(buf, field_start[:, 1:1 + N_DENSE], length[:, 1:1 + N_DENSE])
    if dense is None:
        return None
    cats = _cat_fields(buf, field_start[:, 1 + N_DENSE:], length[:, 1 + N_DENSE:])
    if cats is None:
        return None
    values, missing = cats
    return RawColumns(dense=dense.reshape(n, N_DENSE), cats=values, cat_missing=missing,
                      label=label, has_label=has_label)


def _dense_fields(buf: npt.NDArray[np.uint8], start: npt.NDArray[np.intp],
                  length: npt.NDArray[np.intp]) -> npt.NDArray[np.float64] | None:
    """Integer fields `-?[0-9]{1,18}` or empty -> float64 (NaN when empty); None if any is
    not valid."""
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
                ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.bool_]] | None:
    """Fields of 8 lowercase hex digits or empty -> (uint32 values, missing); None if any is
    not valid."""
    missing = length == 0
    if not np.all(missing | (length == 8)):
        return None
    nibbles = HEX_NIBBLE[_gather(buf, start, 8)]
    if not np.all(missing[..., None] | (nibbles < 16)):
        return None
    nibbles = np.where(missing[..., None], 0, nibbles).astype(np.uint32)
    values = np.bitwise_or.reduce(nibbles << NIBBLE_SHIFT, axis=-1).astype(np.uint32)
    return values, missing


def body_to_columns(body: bytes, max_rows: int) -> RawColumns:
    """Raw rows, one per line (see the module docstring) -> columns. RequestError(422) names
    the first bad row and the reason; (413) when more than `max_rows` rows, (422) when none."""
    parsed = _parse_body(body)
    if parsed is not None and len(parsed.label) <= max_rows:
        return parsed
    return rows_to_columns(body.split(b"\n"), max_rows)


def rows_to_inputs(rows: list[bytes], max_rows: int) -> ModelInputs:
    """Validate raw rows (39 or 40 fields, see the module docstring) and transform them.

    Empty rows are skipped. RequestError(422) names the first bad row and the reason;
    RequestError(413) when more than `max_rows` rows remain, (422) when none do.
    """
    if not any(b"\n" in row.rstrip(b"\r\n") for row in rows):
        parsed = _parse_body(b"\n".join(row.rstrip(b"\r\n") for row in rows))
        if parsed is not None and len(parsed.label) <= max_rows:
            return parsed.inputs()
    return rows_to_columns(rows, max_rows).inputs()


def rows_to_columns(rows: list[bytes], max_rows: int) -> RawColumns:
    """The per-row path: validates each row with `row_error`, which names what is wrong."""
    lines: list[bytes] = []
    has_label: list[bool] = []
    for number, raw in enumerate(rows, start=1):
        row = raw.rstrip(b"\r\n")
        if not row:
            continue
        n_fields = row.count(b"\t") + 1
        if n_fields == N_FIELDS - 1:
            row, labelled = b"0\t" + row, False
        elif n_fields == N_FIELDS:
            labelled = True
        else:
            raise RequestError(
                422,
                f"row {number}: expected {N_FIELDS - 1} fields (no label) or {N_FIELDS} "
                f"(label first), got {n_fields}",
            )
        reason = row_error(row)
        if reason is not None:
            raise RequestError(422, f"row {number}: {reason}")
        lines.append(row)
        has_label.append(labelled)
        if len(lines) > max_rows:
            break
    check_count(len(lines), max_rows)
    batch = parse_valid_rows(lines)
    return RawColumns(dense=batch.dense, cats=batch.cats, cat_missing=batch.cat_missing,
                      label=batch.label, has_label=np.asarray(has_label, dtype=np.bool_))


def text_to_inputs(body: bytes, max_rows: int) -> ModelInputs:
    """A text/plain body (UTF-8 rows, one per line) -> inputs (see `rows_to_inputs`)."""
    return body_to_columns(body, max_rows).inputs()


def _cell(number: int, key: str, value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RequestError(
            422, f"instance {number}: {key} must be a string or an integer, got {value!r}"
        )
    if isinstance(value, str) and ("\t" in value or "\n" in value):
        raise RequestError(422, f"instance {number}: {key} contains a tab or a newline")
    return str(value).encode()


def instance_to_row(number: int, instance: Any) -> bytes:
    """One JSON instance (a dict of field -> value) -> a 39-field raw row."""
    if not isinstance(instance, dict):
        raise RequestError(422, f"instance {number} is not an object")
    unknown = sorted(set(instance) - _INSTANCE_KEYS)
    if unknown:
        raise RequestError(422, f"instance {number}: unknown field {unknown[0]!r}")
    names = (*DENSE_NAMES, *CAT_NAMES)
    return b"\t".join(_cell(number, name, instance.get(name)) for name in names)


def json_to_inputs(body: bytes, max_rows: int) -> ModelInputs:
    """A JSON body (`rows` or `instances`, see the module docstring) -> inputs.

    RequestError(400) for JSON that does not parse or has neither key, (422) for bad rows.
    """
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
    if "rows" in payload:
        if not all(isinstance(r, str) for r in items):
            raise RequestError(422, '"rows" must be a list of strings (raw Criteo rows)')
        rows = [r.encode() for r in items]
        for number, row in enumerate(rows, start=1):
            if b"\n" in row.rstrip(b"\r\n"):
                raise RequestError(422, f"row {number} contains a newline")
        return rows_to_inputs(rows, max_rows)
    return rows_to_inputs([instance_to_row(i, x) for i, x in enumerate(items, 1)], max_rows)


def records_to_rows(records: list[dict[str, Any]]) -> list[bytes]:
    """Records -> raw rows, in order. A record with a non-null `row` is that raw row (a list
    of rows in that cell stands for that many records) and must have no other non-null value;
    any other record is an instance (see `instance_to_row`; null means missing).

    RequestError(422) naming the 1-based record when one mixes both forms."""
    rows: list[bytes] = []
    for number, record in enumerate(records, start=1):
        raw = record.get(ROW_COLUMN)
        if raw is None:
            rows.append(instance_to_row(number, {k: v for k, v in record.items()
                                                 if k != ROW_COLUMN}))
            continue
        if any(v is not None for k, v in record.items() if k not in (ROW_COLUMN, "label")):
            raise RequestError(422, f"record {number}: give either {ROW_COLUMN!r} (a raw row) "
                                    "or the columns I1..C26, not both")
        for item in raw if isinstance(raw, (list, tuple)) else [raw]:
            if not isinstance(item, (str, bytes)):
                raise RequestError(422, f"record {number}: {ROW_COLUMN!r} must be a string")
            rows.append(item.encode() if isinstance(item, str) else item)
    return rows
