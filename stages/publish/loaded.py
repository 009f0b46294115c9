"""A servable model: a materialized full export plus where it came from. No MLflow here.

Shared by serving and the MLflow pyfunc model. Exports are located inside a registry version's
artifacts: `export/` (delta versions) or `artifacts/export/` (full versions, which are also an
MLflow pyfunc model whose artifact `export` is the same directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stages.common.errors import ContractError
from stages.common.model_export import MANIFEST, ModelExport
from stages.common.reference_model import predict as reference_predict
from stages.publish.core.requests import ModelInputs

EXPORT_SUBDIRS = ("export", "artifacts/export")


def find_export_dir(root: Path) -> Path:
    """The export directory inside a downloaded version; ContractError when there is none."""
    for sub in EXPORT_SUBDIRS:
        if (root / sub / MANIFEST).is_file():
            return root / sub
    if (root / MANIFEST).is_file():
        return root
    raise ContractError(f"{root} holds no export (no {MANIFEST} in {', '.join(EXPORT_SUBDIRS)})")


def sorted_full(model: ModelExport) -> ModelExport:
    """`model` (full) with its ids sorted ascending, as `reference_model.predict` needs."""
    if model.kind != "full":
        raise ContractError("only a full model can be served")
    if len(model.ids) < 2 or bool(np.all(model.ids[1:] > model.ids[:-1])):
        return model
    order = np.argsort(model.ids, kind="stable")
    return ModelExport(
        spec=model.spec, kind="full", export_seq=model.export_seq, base_seq=None,
        dense=model.dense, ids=model.ids[order], rows=model.rows[order], meta=model.meta,
    )


@dataclass(frozen=True)
class LoadedModel:
    """An immutable servable model. `version` is the registry version ("" when not from the
    registry); swapping models means replacing the whole object, never mutating one."""

    export: ModelExport
    version: str
    kind: str
    loaded_at_ms: int

    def predict(self, inputs: ModelInputs) -> npt.NDArray[np.float64]:
        """Click probabilities float64[n] (the reference forward pass)."""
        return reference_predict(self.export, inputs.dense, inputs.ids)
