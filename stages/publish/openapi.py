"""The OpenAPI entries of serving's two scoring routes, generated from the feature schema.

/predict and /invocations are plain Starlette routes (see `serving`), so FastAPI does not
derive their schema; these dicts are merged into the generated document. They describe the
bodies `core.requests` and `core.invocations` accept for the served model's feature schema
(a record's properties are its fields, typed by kind; see `core.records`), or, before a model
is loaded, records of any fields.
"""

from __future__ import annotations

from typing import Any

from stages.common.schema import CategoricalField, FeatureSchema
from stages.publish.core.requests import ROW_COLUMN


def _row(schema: FeatureSchema | None) -> dict[str, Any]:
    if schema is None:
        return {"type": "string", "description": "A raw row in the model's schema's format."}
    fmt = schema.format.kind
    how = "a JSON object (one line), fields by their paths" if fmt == "jsonl" else \
        f"{'tab' if fmt == 'tsv' else 'comma'}-separated columns " + ", ".join(schema.columns())
    return {"type": "string", "description": f"A raw row of feature schema {schema.name}: "
            f"{how}; the label ({schema.label.name}) may be left out; an empty or absent "
            "value is missing."}


def _id(field: CategoricalField) -> dict[str, Any]:
    if field.type == "hex":
        return {"type": "string", "pattern": "^[0-9a-fA-F]{1,8}$"}
    if field.type == "int":
        return {"type": "integer"}
    return {"type": "string"}


def record_schema(schema: FeatureSchema | None) -> dict[str, Any]:
    """The JSON schema of one record of `schema` (None: any fields)."""
    if schema is None:
        return {"type": "object", "description": "The served model's fields by name (GET "
                "/openapi.json once a model is loaded lists them); null or absent = missing.",
                "properties": {ROW_COLUMN: _row(None)}}
    props: dict[str, Any] = {}
    for dense in schema.dense:
        props[dense.name] = {"type": ["integer" if dense.type == "int" else "number", "null"]}
    for cat in schema.categorical:
        props[cat.name] = {**_id(cat), "type": [_id(cat)["type"], "null"]}
    for multi in schema.multi:
        props[multi.name] = {"type": ["array", "null"], "items": _id(multi),
                             "description": f"at most {multi.max_len} values are used"}
    for extra in (schema.label, schema.event_id, schema.event_time):
        if extra is not None:
            props[extra.name] = {"description": "ignored"}
    props[ROW_COLUMN] = _row(schema)
    return {"type": "object", "additionalProperties": False, "properties": props}


def _example(schema: FeatureSchema | None) -> dict[str, Any]:
    if schema is None:
        return {"dataframe_split": {"columns": [ROW_COLUMN], "data": [["<a raw row>"]]}}
    columns = [f.name for f in schema.dense[:2]] + [f.name for f in schema.categorical[:1]]
    data: list[Any] = [1] * len(schema.dense[:2]) + [_id_example(f) for f in schema.categorical[:1]]
    return {"dataframe_split": {"columns": columns, "data": [data]}}


def _id_example(field: CategoricalField) -> Any:
    return "9e3779b1" if field.type == "hex" else 7 if field.type == "int" else "a"
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}}}}}
_TEXT = {"schema": {"type": "string"}, "example": "<a raw row>\n..."}


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


def scoring_paths(max_rows: int, secured: bool, schema: FeatureSchema | None = None
                  ) -> dict[str, Any]:
    """OpenAPI path items of POST /predict and POST /invocations for `schema` (the served
    model's; None before one is loaded)."""
    row, record = _row(schema), record_schema(schema)
    name = schema.name if schema is not None else "the model's"
    predictions = {"type": "array", "items": {"type": "number"}}
    security: list[dict[str, list[str]]] = [{"bearer": []}] if secured else []
    predict = {
        "summary": f"Score rows of {name} feature schema (freshrec's form)",
        "description": f"Raw rows as text, one per line, or JSON {{\"rows\": [...]}} or "
                       f"{{\"instances\": [record, ...]}}. At most {max_rows} rows.",
        "requestBody": {"required": True, "content": {
            "text/plain": _TEXT,
            "application/json": {"schema": {"type": "object", "properties": {
                "rows": {"type": "array", "items": row},
                "instances": {"type": "array", "items": record}}}},
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
                "dataframe_records": {"type": "array", "items": record},
                "instances": {}, "inputs": {}, "params": {"type": "object"}}},
                "example": _example(schema)},
            "text/csv": {"schema": {"type": "string"}, "example": _csv_example(schema)},
            "text/plain": _TEXT,
        }},
        "responses": _responses({"type": "object", "properties": {
            "predictions": predictions}}, secured),
        "security": security,
    }
    return {"/predict": {"post": predict}, "/invocations": {"post": invocations}}


def _csv_example(schema: FeatureSchema | None) -> str:
    split = _example(schema)["dataframe_split"]
    return ",".join(split["columns"]) + "\n" + ",".join(map(str, split["data"][0])) + "\n"
