"""A servable model: a materialized full export plus where it came from. No MLflow here.

Shared by serving and the MLflow pyfunc model. Exports are located inside a registry version's
artifacts: `export/` (delta versions) or `artifacts/export/` (full versions); both kinds are also
an MLflow pyfunc model (see `version_model.py`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stages.common.errors import ContractError
from stages.common.model_export import MANIFEST, ModelExport, read_export
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


def manifest_sha256(export_dir: Path) -> str:
    """sha256 of the export's manifest file (which holds the sha256 of every array)."""
    return hashlib.sha256((export_dir / MANIFEST).read_bytes()).hexdigest()


def verified_export(export_dir: Path, sha256: str, publish_seq: int, what: str) -> ModelExport:
    """Read the export of a registry version (`what` names it in errors), checking its manifest
    against `sha256` (the version's tag), every array against the manifest (`read_export`) and
    its export seq against `publish_seq`. ContractError when any check fails."""
    if not (export_dir / MANIFEST).is_file():
        raise ContractError(f"{what}: no export in {export_dir} (no {MANIFEST})")
    if manifest_sha256(export_dir) != sha256:
        raise ContractError(f"{what}: the manifest does not match its sha256 tag")
    export = read_export(export_dir)
    if export.export_seq != publish_seq:
        raise ContractError(f"{what}: export seq {export.export_seq} "
                            f"is not its publish seq {publish_seq}")
    return export


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
