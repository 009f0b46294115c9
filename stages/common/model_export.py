"""The model-export contract between the trainer, the publisher and serving. No pickle anywhere.

An export is a directory:

    manifest.json            format version, kind, sequence numbers, the model spec, metadata,
                             and for every array file its dtype, shape and sha256
    dense/<name>.npy         dense weights under canonical names (see reference_model.py)
    embedding_ids.npy        uint64[k]        the ids of the rows below (unique)
    embedding_rows.npy       float32[k, w]    w = ModelSpec.row_width
    evicted_ids.npy          uint64[m]        ids removed since the base export (delta only)

`kind` is "full" (the whole table) or "delta" (rows added or changed since export `base_seq`, and
the ids evicted since then; dense weights are always complete). Arrays are written with
`numpy.save(allow_pickle=False)` and read with `allow_pickle=False`. `read_export` checks every
checksum and refuses a corrupt or incomplete export with ContractError.

The trainer writes exports (one per few windows, sequence numbers 1, 2, ...; the first after a
start is full); the publisher turns them into registry versions; serving applies them.

Hand-off through MLflow (stages meet only through Kafka, Redis and MLflow): the trainer's run in
the experiment `FRESHREC_MLFLOW_EXPERIMENT` carries the tag `freshrec.role=trainer`; each export
is logged as the artifact directory `exports/<export_seq:08d>/`, and after the upload the run tag
`freshrec.export_seq` is set to that number. A publisher lists the trainer runs, reads the tag,
and downloads the exports it has not registered yet, in order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from stages.common.errors import ContractError
from stages.common.model_spec import ModelSpec as ModelSpec  # re-exported: its old home

EXPORT_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARTIFACT_DIR = "exports"
TAG_ROLE = "freshrec.role"
TAG_EXPORT_SEQ = "freshrec.export_seq"


def artifact_path(export_seq: int) -> str:
    """Where export `export_seq` lives among the trainer run's artifacts."""
    return f"{ARTIFACT_DIR}/{export_seq:08d}"
_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789_/")


@dataclass(frozen=True)
class ModelExport:
    """One export. `meta` is JSON-able (window range, sample count, store position, metrics)."""

    spec: ModelSpec
    kind: Literal["full", "delta"]
    export_seq: int
    base_seq: int | None
    dense: dict[str, npt.NDArray[np.float32]]
    ids: npt.NDArray[np.uint64]
    rows: npt.NDArray[np.float32]
    evicted: npt.NDArray[np.uint64] = field(default_factory=lambda: np.empty(0, np.uint64))
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("full", "delta"):
            raise ValueError(f"kind must be full or delta, got {self.kind!r}")
        if (self.kind == "delta") != (self.base_seq is not None):
            raise ValueError("a delta export needs base_seq; a full export has none")
        if self.rows.shape != (len(self.ids), self.spec.row_width):
            raise ValueError(
                f"rows must be [{len(self.ids)}, {self.spec.row_width}], got {self.rows.shape}"
            )
        for name in self.dense:
            if not name or set(name) - _NAME_OK:
                raise ValueError(f"bad dense weight name {name!r}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_export(export: ModelExport, directory: Path) -> Path:
    """Write `export` into `directory` (created; must be empty or absent). The manifest is
    written last, so a directory without one is an incomplete export."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "embedding_ids.npy": np.ascontiguousarray(export.ids, dtype=np.uint64),
        "embedding_rows.npy": np.ascontiguousarray(export.rows, dtype=np.float32),
        "evicted_ids.npy": np.ascontiguousarray(export.evicted, dtype=np.uint64),
    }
    for name, value in export.dense.items():
        arrays[f"dense/{name}.npy"] = np.ascontiguousarray(value, dtype=np.float32)
    files = {}
    for rel, array in arrays.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array, allow_pickle=False)
        files[rel] = {"dtype": str(array.dtype), "shape": list(array.shape), "sha256": _sha256(path)}
    manifest = {
        "format_version": EXPORT_FORMAT_VERSION,
        "kind": export.kind,
        "export_seq": export.export_seq,
        "base_seq": export.base_seq,
        "spec": export.spec.to_dict(),
        "dense_names": sorted(export.dense),
        "meta": export.meta,
        "files": files,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return directory


def read_manifest(directory: Path) -> dict[str, Any]:
    """The parsed manifest; ContractError when missing, unreadable or of another version."""
    path = directory / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ContractError(f"{directory} is not a complete export: no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise ContractError(f"unreadable manifest {path}: {exc}") from None
    if manifest.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ContractError(
            f"export format {manifest.get('format_version')!r} in {directory}; "
            f"this build reads {EXPORT_FORMAT_VERSION}"
        )
    return manifest


def read_export(directory: Path) -> ModelExport:
    """Load and verify an export: every file present, every sha256, dtype and shape as listed."""
    manifest = read_manifest(directory)
    loaded: dict[str, np.ndarray] = {}
    for rel, info in manifest["files"].items():
        path = directory / rel
        if not path.is_file():
            raise ContractError(f"export {directory} is incomplete: {rel} is missing")
        if _sha256(path) != info["sha256"]:
            raise ContractError(f"export {directory} is corrupt: {rel} fails its sha256 check")
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ContractError(f"export {directory}: {rel} is not a plain array: {exc}") from None
        if str(array.dtype) != info["dtype"] or list(array.shape) != info["shape"]:
            raise ContractError(f"export {directory}: {rel} has the wrong dtype or shape")
        loaded[rel] = array
    try:
        return ModelExport(
            spec=ModelSpec.from_dict(manifest["spec"]),
            kind=manifest["kind"],
            export_seq=int(manifest["export_seq"]),
            base_seq=manifest["base_seq"],
            dense={n: loaded[f"dense/{n}.npy"] for n in manifest["dense_names"]},
            ids=loaded["embedding_ids.npy"],
            rows=loaded["embedding_rows.npy"],
            evicted=loaded["evicted_ids.npy"],
            meta=manifest.get("meta", {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ContractError(f"export {directory} does not match its manifest: {exc}") from None


def apply_delta(base: ModelExport, delta: ModelExport) -> ModelExport:
    """The full model after `delta`: base rows minus evicted ids, then delta rows upserted.

    `base` must be full and `delta.base_seq` must equal `base.export_seq` (ContractError
    otherwise: deltas apply in order, none skipped). The result is full, with sorted ids and the
    delta's sequence number, dense weights and meta.
    """
    if base.kind != "full":
        raise ContractError("a delta applies onto a full model")
    if delta.kind == "full":
        return delta
    if delta.base_seq != base.export_seq:
        raise ContractError(
            f"delta {delta.export_seq} applies onto {delta.base_seq}, not {base.export_seq}"
        )
    if not delta.spec.same_model(base.spec):
        raise ContractError("delta and base have different model specs")
    ids, rows = upsert_rows(base.ids, base.rows, delta.ids, delta.rows, delta.evicted)
    return ModelExport(
        spec=delta.spec,
        kind="full",
        export_seq=delta.export_seq,
        base_seq=None,
        dense=dict(delta.dense),
        ids=ids,
        rows=rows,
        meta=dict(delta.meta),
    )


def upsert_rows(
    ids: npt.NDArray[np.uint64],
    rows: npt.NDArray[np.float32],
    new_ids: npt.NDArray[np.uint64],
    new_rows: npt.NDArray[np.float32],
    drop: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
    """(ids, rows) sorted by id: the old rows minus `drop` and minus `new_ids`, plus the new
    rows (a new row replaces the old one of its id)."""
    keep = ~np.isin(ids, drop) & ~np.isin(ids, new_ids)
    merged_ids = np.concatenate([ids[keep], new_ids])
    merged_rows = np.concatenate([rows[keep], new_rows])
    order = np.argsort(merged_ids, kind="stable")
    return merged_ids[order], merged_rows[order]


def diff_exports(base: ModelExport, new: ModelExport) -> ModelExport:
    """The delta that turns full `base` into full `new`: `apply_delta(base, diff) == new`.

    Rows: ids of `new` absent from `base` or whose row differs (bitwise); evicted: ids of `base`
    absent from `new`. Dense weights and meta from `new`; numbered `new.export_seq` onto
    `base.export_seq`. Works whatever produced the two (a trainer restart's full export, a chain
    of deltas): deciding full or delta never depends on how the trainer exported.
    """
    if base.kind != "full" or new.kind != "full":
        raise ContractError("diff_exports takes two full models")
    if not base.spec.same_model(new.spec):
        raise ContractError("the two models have different model specs")
    old_ids, old_rows = _by_id(base)
    new_ids, new_rows = _by_id(new)
    pos = np.searchsorted(old_ids, new_ids)
    found = pos < len(old_ids)
    found[found] = old_ids[pos[found]] == new_ids[found]
    changed = ~found
    same_shape = old_rows[pos[found]]
    changed[found] = np.any(same_shape != new_rows[found], axis=1)
    evicted = np.setdiff1d(old_ids, new_ids, assume_unique=True).astype(np.uint64)
    return ModelExport(
        spec=new.spec,
        kind="delta",
        export_seq=new.export_seq,
        base_seq=base.export_seq,
        dense=dict(new.dense),
        ids=new_ids[changed],
        rows=new_rows[changed],
        evicted=evicted,
        meta=dict(new.meta),
    )


def _by_id(model: ModelExport) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
    if len(model.ids) < 2 or bool(np.all(model.ids[1:] > model.ids[:-1])):
        return model.ids, model.rows
    order = np.argsort(model.ids, kind="stable")
    return model.ids[order], model.rows[order]


def non_finite(export: ModelExport) -> str | None:
    """Why `export` must not be served (its first array holding NaN or inf), or None when every
    weight is finite. A diverged model is refused by the trainer, the publisher and serving."""
    arrays = [("embedding rows", export.rows)] + [
        (f"dense weight {name}", value) for name, value in sorted(export.dense.items())
    ]
    for what, array in arrays:
        finite = np.isfinite(array)
        if not finite.all():
            return f"{what} hold {int(finite.size - finite.sum())} NaN/inf values (diverged)"
    return None
