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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stages.common.criteo import CAT_NAMES, DENSE_NAMES, N_FIELDS, parse_valid_rows, row_error
from stages.common.errors import PublishError
from stages.common.transform import dense_transform
from stages.common.hashing import feature_ids

_INSTANCE_KEYS = frozenset(("label", *DENSE_NAMES, *CAT_NAMES))
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


def _check_count(n: int, max_rows: int) -> None:
    if n == 0:
        raise RequestError(422, "no rows in the request")
    if n > max_rows:
        raise RequestError(413, f"too many rows: {n} (at most {max_rows} per request)")


def rows_to_inputs(rows: list[bytes], max_rows: int) -> ModelInputs:
    """Validate raw rows (39 or 40 fields, see the module docstring) and transform them.

    Empty rows are skipped. RequestError(422) names the first bad row and the reason;
    RequestError(413) when more than `max_rows` rows remain, (422) when none do.
    """
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
    _check_count(len(lines), max_rows)
    batch = parse_valid_rows(lines)
    return ModelInputs(
        dense=dense_transform(batch.dense),
        ids=feature_ids(batch.cats, batch.cat_missing),
        label=batch.label,
        has_label=np.asarray(has_label, dtype=np.bool_),
    )


def text_to_inputs(body: bytes, max_rows: int) -> ModelInputs:
    """A text/plain body (UTF-8 rows, one per line) -> inputs (see `rows_to_inputs`)."""
    return rows_to_inputs(body.split(b"\n"), max_rows)


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
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or ("rows" in payload) == ("instances" in payload):
        raise RequestError(400, 'the JSON body must be an object with "rows" or "instances"')
    items = payload.get("rows", payload.get("instances"))
    if not isinstance(items, list):
        raise RequestError(400, '"rows" / "instances" must be a list')
    _check_count(len(items), max_rows)
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
