"""The MLflow pyfunc model of a full version: raw Criteo rows in, click probabilities out.

Logged as "models from code" (`pyfunc_entry.py`), so nothing is pickled: the weights are the
export's .npy files, loaded (and checksum-verified) in `load_context`. Accepted inputs:
a list of raw rows (39 or 40 tab-separated fields, see `core.requests`), a DataFrame or array
with one string column of such rows, or a DataFrame with the columns I1..I13, C1..C26 (an
optional `label` column is ignored; missing values as NaN/None/empty). Output: float64[n].
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from stages.common.criteo import CAT_NAMES, DENSE_NAMES
from stages.common.errors import PublishError
from stages.common.model_export import read_export
from stages.publish.core.requests import instance_to_row, rows_to_inputs
from stages.publish.loaded import LoadedModel, sorted_full

_MAX_ROWS = 10_000_000


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def input_rows(model_input: Any) -> list[bytes]:
    """The raw rows of any accepted input form (see the module docstring)."""
    if hasattr(model_input, "columns"):
        columns = [str(c) for c in model_input.columns]
        if set(columns) & set(DENSE_NAMES + CAT_NAMES):
            records = model_input.to_dict(orient="records")
            return [
                instance_to_row(i, {str(k): _cell(v) for k, v in r.items()})
                for i, r in enumerate(records, 1)
            ]
        if len(columns) != 1:
            raise PublishError("a DataFrame input needs one column of raw rows or I1..C26")
        model_input = model_input.iloc[:, 0].tolist()
    if isinstance(model_input, dict) and "rows" in model_input:
        model_input = model_input["rows"]
    if isinstance(model_input, np.ndarray):
        model_input = model_input.reshape(-1).tolist()
    if isinstance(model_input, str):
        model_input = model_input.split("\n")
    if not isinstance(model_input, list):
        raise PublishError(f"unsupported input type {type(model_input).__name__}")
    return [r.encode() if isinstance(r, str) else bytes(r) for r in model_input]


class FreshrecPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """Loads the export named by the artifact `export` and scores raw rows."""

    def load_context(self, context: Any) -> None:
        export = sorted_full(read_export(Path(context.artifacts["export"])))
        self._model = LoadedModel(export, "", "full", int(time.time() * 1000))

    # no type hints: MLflow would try (and fail) to derive a schema from them
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        inputs = rows_to_inputs(input_rows(model_input), _MAX_ROWS)
        return self._model.predict(inputs)
