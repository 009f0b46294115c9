"""Synthetic exports and Criteo rows with random weights, for tests and benchmarks.

Until a trainer exists these stand in for its exports; they follow the export contract exactly
(dense weight names of `reference_model`, full/delta semantics). Pure NumPy, seeded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from stages.common.criteo import N_CATS, N_DENSE
from stages.common.hashing import fallback_ids, feature_ids
from stages.common.export_meta import ExportMeta, ProgressiveMetrics, StoreRange
from stages.common.model_export import ModelExport, ModelSpec

VOCAB = 50  # values per categorical field in synthetic rows


def dense_weights(spec: ModelSpec, rng: np.random.Generator) -> dict[str, npt.NDArray[np.float32]]:
    """Random dense weights with the canonical names and shapes of `spec`."""
    width = N_CATS * spec.embedding_dim + N_DENSE
    out: dict[str, npt.NDArray[np.float32]] = {}
    fan_in = width
    for i, units in enumerate(spec.hidden_units):
        out[f"deep/{i}/kernel"] = rng.normal(0, fan_in**-0.5, (fan_in, units)).astype(np.float32)
        out[f"deep/{i}/bias"] = rng.normal(0, 0.01, units).astype(np.float32)
        fan_in = units
    if spec.model_type == "wide_deep":
        out["wide/kernel"] = rng.normal(0, 0.1, (N_DENSE, 1)).astype(np.float32)
        out["wide/bias"] = np.array([-1.0], np.float32)
    else:
        for layer in range(spec.cross_layers):
            out[f"cross/{layer}/kernel"] = rng.normal(0, 0.01, (width, width)).astype(np.float32)
            out[f"cross/{layer}/bias"] = rng.normal(0, 0.01, width).astype(np.float32)
        fan_in += width
    out["head/kernel"] = rng.normal(0, fan_in**-0.5, (fan_in, 1)).astype(np.float32)
    out["head/bias"] = np.array([-1.0], np.float32)
    return out


def vocab_ids() -> npt.NDArray[np.uint64]:
    """The sorted feature ids of the synthetic rows' values (and the fallback ids)."""
    values = np.tile(np.arange(VOCAB, dtype=np.uint32)[:, None], (1, N_CATS))
    ids = feature_ids(values, np.zeros_like(values, dtype=bool)).reshape(-1)
    return np.unique(np.concatenate([ids, fallback_ids(N_CATS)]))


def synthetic_meta(seq: int, auc: float | None = 0.7, **update: Any) -> dict[str, Any]:
    """A trainer export meta (the `ExportMeta` contract) for export `seq`: windows
    10*seq..10*seq+9, the store position, `auc` as the last window's progressive AUC."""
    return ExportMeta(
        window_first=10 * seq, window_last=10 * seq + 9, samples=1000 * seq,
        store=StoreRange(stream_id=f"{seq}-0", seq=5 * seq),
        metrics=ProgressiveMetrics(samples=500, positives=100, auc=auc, logloss=0.45),
    ).model_copy(update=update).to_dict()


def full_export(
    spec: ModelSpec, rng: np.random.Generator, *, n_rows: int | None = None, seq: int = 1,
    meta: dict[str, Any] | None = None,
) -> ModelExport:
    """A full export: the synthetic vocabulary's ids (n_rows=None) or n_rows random ids."""
    ids = vocab_ids() if n_rows is None else np.unique(
        rng.integers(0, 2**63, n_rows, dtype=np.uint64)
    )
    rows = rng.normal(0, 0.1, (len(ids), spec.row_width)).astype(np.float32)
    return ModelExport(spec, "full", seq, None, dense_weights(spec, rng), ids, rows,
                       meta=dict(meta or synthetic_meta(seq)))


def delta_export(
    base: ModelExport, rng: np.random.Generator, *, change: float = 0.05, evict: float = 0.01,
    add: int = 10, seq: int | None = None, meta: dict[str, Any] | None = None,
) -> ModelExport:
    """A delta onto `base` (full): a `change` fraction of its rows changed, an `evict`
    fraction evicted, `add` new random ids; new dense weights."""
    n = len(base.ids)
    picked = rng.permutation(n)
    n_change, n_evict = int(n * change), int(n * evict)
    changed = base.ids[picked[:n_change]]
    evicted = np.sort(base.ids[picked[n_change : n_change + n_evict]])
    new = rng.integers(0, 2**63, add, dtype=np.uint64)
    new = new[~np.isin(new, base.ids)]
    ids = np.concatenate([changed, new])
    rows = rng.normal(0, 0.1, (len(ids), base.spec.row_width)).astype(np.float32)
    seq = base.export_seq + 1 if seq is None else seq
    return ModelExport(
        base.spec, "delta", seq, base.export_seq,
        dense_weights(base.spec, rng), ids, rows, evicted, dict(meta or synthetic_meta(seq)),
    )


def criteo_rows(n: int, rng: np.random.Generator, *, label: bool = True) -> list[str]:
    """n random valid Criteo rows over the synthetic vocabulary (some values missing)."""
    out = []
    for _ in range(n):
        ints = ["" if rng.random() < 0.1 else str(int(rng.integers(-3, 1000)))
                for _ in range(N_DENSE)]
        cats = ["" if rng.random() < 0.05 else f"{int(rng.integers(0, VOCAB + 5)):08x}"
                for _ in range(N_CATS)]
        fields = ([str(int(rng.integers(0, 2)))] if label else []) + ints + cats
        out.append("\t".join(fields))
    return out
