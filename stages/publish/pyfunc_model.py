"""The MLflow pyfunc model of a registry version (full or delta): records of its feature schema
in, click probabilities out.

Logged as "models from code" (`pyfunc_entry.py`), so nothing is pickled: the weights are the
exports' .npy files, loaded (and checksum-verified) in `load_context`. A full version holds its
export; a delta version holds its delta export and the chain file (`core.chain`) naming the
versions it applies onto, which `load_context` downloads from the registry, verifies (manifest
sha256 against the chain file, every array against its manifest) and applies in order.

Inputs (through the signature, see `version_model.py`): a DataFrame with a column per field of
the version's schema (its artifact `schema`; a version without one: the bundled preset of its
spec's hash), missing values as NaN / None, multi fields as lists; or with the column `row`
holding raw rows in the schema's format (see `core.requests`). Without schema enforcement
(`unwrap_python_model().predict`, or a version logged before signatures) a list of raw rows,
a one-column DataFrame of them and `{"rows": [...]}` are accepted too.
Output: float64[n], in input order.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd

from stages.common.errors import ContractError, PublishError
from stages.common.model_export import ModelExport, apply_delta, read_export
from stages.publish.core.chain import CHAIN_FILE, VersionChain
from stages.publish.core.invocations import columns_to_rows
from stages.publish.core.requests import ROW_COLUMN, ModelInputs, RequestParser, raw_rows
from stages.publish.loaded import (
    SCHEMA_ARTIFACT, LoadedModel, find_export_dir, read_schema_json, sorted_full, verified_export,
)

_MAX_ROWS = 10_000_000


def _cell(value: Any) -> Any:
    """A DataFrame cell as `core.records` takes it: None when missing, int for an integral
    number, a list for an array (a multi field)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def model_inputs(parser: RequestParser, model_input: Any) -> ModelInputs:
    """The model inputs of any accepted input form (see the module docstring)."""
    known = {*parser.schema.field_names(), ROW_COLUMN}
    if hasattr(model_input, "columns"):
        columns = [str(c) for c in model_input.columns]
        if set(columns) & known:
            cells = {str(name): [_cell(v) for v in model_input[name].tolist()]
                     for name in model_input.columns}
            return parser.inputs(columns_to_rows(cells, _MAX_ROWS, parser, len(model_input)))
        if not columns:  # what MLflow's schema enforcement leaves of unknown columns
            raise PublishError("no input columns: send the schema's fields ("
                               + ", ".join(parser.schema.field_names())
                               + f") or raw rows in the column {ROW_COLUMN!r}")
        if len(columns) != 1:
            raise PublishError("a DataFrame input needs the schema's field columns or one "
                               f"column {ROW_COLUMN!r} of raw rows")
        model_input = model_input.iloc[:, 0].tolist()
    if isinstance(model_input, dict) and "rows" in model_input:
        model_input = model_input["rows"]
    if isinstance(model_input, np.ndarray):
        model_input = model_input.reshape(-1).tolist()
    if isinstance(model_input, str):
        model_input = model_input.split("\n")
    if not isinstance(model_input, list):
        raise PublishError(f"unsupported input type {type(model_input).__name__}")
    rows = [r.encode() if isinstance(r, str) else bytes(r) for r in model_input]
    return parser.inputs(raw_rows(parser, rows, _MAX_ROWS))


def registry_uri(chain: VersionChain) -> str:
    """Where the chain's versions are: MLFLOW_TRACKING_URI when set (`mlflow models serve -m
    models:/...` needs it anyway), else the URI the publisher recorded."""
    return os.environ.get("MLFLOW_TRACKING_URI") or chain.registry_uri


def materialize_chain(chain: VersionChain, own_export: Path, work: Path) -> ModelExport:
    """The full model of the version whose chain is `chain` and whose export is `own_export`:
    the chain's exports downloaded into `work`, verified and applied in order."""
    uri = registry_uri(chain)
    model: ModelExport | None = None
    for number, link in enumerate(chain.links):
        what = f"{chain.model_name} v{link.version} ({link.export_uri})"
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=link.export_uri, dst_path=str(work / str(number)), tracking_uri=uri
            )
        except Exception as exc:  # MlflowException, requests' and OS errors
            raise PublishError(
                f"cannot download {what} from {uri}: {type(exc).__name__}: {str(exc)[:300]}; "
                "set MLFLOW_TRACKING_URI to the registry that holds the model"
            ) from exc
        export = verified_export(Path(local), link.manifest_sha256, link.publish_seq, what)
        model = sorted_full(export) if model is None else apply_delta(model, export)
    own = verified_export(own_export, chain.manifest_sha256, chain.publish_seq,
                          f"{chain.model_name} seq {chain.publish_seq}")
    if model is None:
        return sorted_full(own)
    return apply_delta(model, own)


class FreshrecPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """Materializes the version's model (its chain applied) and scores records of its
    feature schema."""

    def load_context(self, context: Any) -> None:
        chain_path = context.artifacts.get("chain")
        if chain_path is None:  # a full version logged before chain files existed
            export = sorted_full(read_export(Path(context.artifacts["export"])))
        else:
            chain = VersionChain.from_json(Path(chain_path).read_text())
            own = context.artifacts.get("export")
            if own is None:
                # a delta's export lies at the top of the version directory; MLflow keeps
                # artifacts in <model>/artifacts/, two levels above the chain file
                root = Path(chain_path).parent.parent
                if Path(chain_path).name != CHAIN_FILE or not (root / "MLmodel").is_file():
                    raise ContractError(f"{chain_path} is not inside a version directory")
                own = str(find_export_dir(root))
            with tempfile.TemporaryDirectory(prefix="freshrec-chain-") as work:
                export = materialize_chain(chain, Path(own), Path(work))
        schema_path = context.artifacts.get(SCHEMA_ARTIFACT)
        schema = None if schema_path is None else read_schema_json(
            Path(schema_path).read_text(encoding="utf-8"), f"artifact {SCHEMA_ARTIFACT}")
        self._model = LoadedModel(export, "", "full", int(time.time() * 1000), schema)

    # no type hints: MLflow would derive a signature from them (the signature is explicit)
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        model = self._model
        return model.predict(model_inputs(model.requests, model_input))
