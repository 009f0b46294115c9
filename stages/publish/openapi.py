"""The OpenAPI entries of serving's two scoring routes, written by hand.

/predict and /invocations are plain Starlette routes (see `serving`), so FastAPI does not
derive their schema; these dicts are merged into the generated document. They describe the
bodies `core.requests` and `core.invocations` accept.
"""

from __future__ import annotations

from typing import Any

from stages.common.criteo import CAT_NAMES, DENSE_NAMES

_ROW = {"type": "string", "description": "A raw Criteo row: 39 tab-separated fields "
        "(I1..I13, C1..C26) or 40 with the label first; an empty field is missing."}
_RECORD: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        **{n: {"type": ["integer", "null"], "description": "an integer, or null if missing"}
           for n in DENSE_NAMES},
        **{n: {"type": ["string", "null"], "pattern": "^[0-9a-f]{8}$"} for n in CAT_NAMES},
        "label": {"description": "ignored"},
        "row": _ROW,
    },
}
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}}}}}
_TEXT = {"schema": {"type": "string"}, "example": "<a raw tab-separated Criteo row>\n..."}


def _responses(extra: dict[str, Any], secured: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": "One click probability per row, in order.",
                "content": {"application/json": {"schema": extra}}},
        "400": {"description": "The body does not parse.", **_ERROR},
        "413": {"description": "Too many rows or bytes.", **_ERROR},
        "415": {"description": "Unsupported content type.", **_ERROR},
        "422": {"description": "A bad row or value; the message names it.", **_ERROR},
        "503": {"description": "No model loaded yet, or too many requests in flight.",
                **_ERROR},
    }
    if secured:
        out["401"] = {"description": "Missing or wrong bearer token.", **_ERROR}
    return out


def scoring_paths(max_rows: int, secured: bool) -> dict[str, Any]:
    """OpenAPI path items of POST /predict and POST /invocations."""
    predictions = {"type": "array", "items": {"type": "number"}}
    security: list[dict[str, list[str]]] = [{"bearer": []}] if secured else []
    predict = {
        "summary": "Score Criteo rows (freshrec's form)",
        "description": f"Raw rows as text, one per line, or JSON {{\"rows\": [...]}} or "
                       f"{{\"instances\": [record, ...]}}. At most {max_rows} rows.",
        "requestBody": {"required": True, "content": {
            "text/plain": _TEXT,
            "application/json": {"schema": {"type": "object", "properties": {
                "rows": {"type": "array", "items": _ROW},
                "instances": {"type": "array", "items": _RECORD}}}},
        }},
        "responses": _responses({"type": "object", "properties": {
            "model": {"type": "string"}, "version": {"type": "string"},
            "predictions": predictions}}, secured),
        "security": security,
    }
    invocations = {
        "summary": "Score rows in MLflow's scoring protocol",
        "description": "What `mlflow models serve` accepts for this model: dataframe_split, "
                       "dataframe_records, instances or inputs (records, columns or raw rows); "
                       "text/csv with a header; raw rows as text. Absent columns and nulls are "
                       f"missing values. At most {max_rows} rows.",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "dataframe_split": {"type": "object", "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "data": {"type": "array", "items": {"type": "array"}}}},
                "dataframe_records": {"type": "array", "items": _RECORD},
                "instances": {}, "inputs": {}, "params": {"type": "object"}}},
                "example": {"dataframe_split": {"columns": ["I1", "I2", "C1"],
                                                "data": [[3, None, "9e3779b1"]]}}},
            "text/csv": {"schema": {"type": "string"}, "example": "I1,C1\n3,9e3779b1\n"},
            "text/plain": _TEXT,
        }},
        "responses": _responses({"type": "object", "properties": {
            "predictions": predictions}}, secured),
        "security": security,
    }
    return {"/predict": {"post": predict}, "/invocations": {"post": invocations}}
