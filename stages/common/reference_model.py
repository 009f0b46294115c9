"""The forward pass of the exported models in NumPy: the definition the trainer must match.

Inputs per row: dense x float32[D] (`layout.Transform.dense`) and ids uint64[F] (one per id
slot, `layout.Transform.ids`). Each id is looked up in the exported table; an id that is absent
(never admitted, or evicted) uses the row of its slot's fallback id (`ModelSpec.fallback_ids`),
and a fallback absent too uses zeros. In the simplest layout (one slot per group at full width,
nothing standardised) let E be the [F, d] deep part of the looked-up rows and
x0 = concat(E.flatten(), x) (F*d + D).

Dense weight names (kernels are [in, out], biases [out]):
    deep/<i>/kernel, deep/<i>/bias     the MLP on x0, ReLU after every layer, i = 0, 1, ...
    head/kernel, head/bias             the output layer to one logit (no activation)
    wide/kernel [D, 1], wide/bias [1]  Wide&Deep only: the linear part on the dense features
    cross/<l>/kernel [W, W], cross/<l>/bias [W]   DCN only, W = width of x0

Wide&Deep:  logit = head(deep(x0)) + sum_f wide_weight(id_f) + x @ wide/kernel + wide/bias,
            where wide_weight is the last column of an embedding row (row_width = d + 1).
DCN (DCN-v2, "full-matrix" cross network, parallel structure, Wang et al. 2021):
            x_{l+1} = x0 * (x_l @ cross/<l>/kernel + cross/<l>/bias) + x_l,   x_0 = x0,
            logit = head(concat(x_L, deep(x0))).
The probability is sigmoid(logit). Computed in float64 for a stable reference (`logits` also
computes in float32, the trainer's own precision: serving does, `publish/core/scoring.py`).

A schema's layout (`ModelSpec.groups`, see `stages/common/layout.py`) generalises E: group g
takes the first `dim_g` floats of its slots' rows, weighted by `ModelSpec.slot_weights(ids)`
(1 for a single slot; 1 or 1/count for a pooled multi field, 0 on padding) and summed; x0 is
the deep groups' vectors, then x. Crosses are wide-only groups: only their wide weight counts,
weighted like every slot: wide = sum_s weight_s * wide_weight(id_s). Dense inputs marked
`standardize` are replaced by (x - norm/mean) / sqrt(norm/var + 1e-3) (dense weights [n_dense]
kept by the trainer as running statistics; 0 and 1 on the other columns) before both parts.
The Criteo preset's layout (`ModelSpec.simple`: 13 dense, 26 slots) is exactly E above.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from stages.common.hashing import fallback_ids
from stages.common.model_export import ModelExport, ModelSpec


def lookup_rows(
    table_ids: npt.NDArray[np.uint64],
    table_rows: npt.NDArray[np.float32],
    ids: npt.NDArray[np.uint64],
    fallback: npt.NDArray[np.uint64] | None = None,
) -> npt.NDArray[np.float64]:
    """Rows for ids uint64[n, F] -> float64[n, F, w]; `table_ids` sorted ascending.

    An absent id falls back to its slot's fallback row (`fallback` uint64[F], normally
    `ModelSpec.fallback_ids()`; default: one table per slot, 0..F-1), or zeros when that is
    absent too.
    """
    n, n_fields = ids.shape
    width = table_rows.shape[1]
    if fallback is None:
        fallback = fallback_ids(n_fields)
    wanted = np.where(_present(table_ids, ids), ids, fallback[None, :])
    present = _present(table_ids, wanted)
    pos = np.searchsorted(table_ids, wanted)
    pos = np.minimum(pos, max(len(table_ids) - 1, 0))
    out = np.zeros((n, n_fields, width), dtype=np.float64)
    if len(table_ids):
        out[present] = table_rows[pos[present]]
    return out


def _present(table_ids: npt.NDArray[np.uint64], ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    if len(table_ids) == 0:
        return np.zeros(ids.shape, dtype=np.bool_)
    pos = np.minimum(np.searchsorted(table_ids, ids), len(table_ids) - 1)
    return table_ids[pos] == ids


def _mlp(spec: ModelSpec, dense: dict[str, np.ndarray], h: np.ndarray) -> np.ndarray:
    for i in range(len(spec.hidden_units)):
        h = np.maximum(h @ dense[f"deep/{i}/kernel"] + dense[f"deep/{i}/bias"], 0.0)
    return h


def logits(
    spec: ModelSpec,
    dense_weights: dict[str, npt.NDArray[np.float32]],
    rows: npt.NDArray[np.floating[Any]],
    x: npt.NDArray[np.float32],
    slot_weights: npt.NDArray[np.float32] | None = None,
    dtype: type[np.floating[Any]] = np.float64,
) -> npt.NDArray[np.floating[Any]]:
    """Logits `dtype`[n] from looked-up rows float[n, F, w] and dense inputs float[n, D];
    `slot_weights` float[n, F] (`ModelSpec.slot_weights`) is needed unless `spec.simple`.
    `dtype`: what every step computes in (float64: the reference; float32: the trainer's
    precision, what serving uses, about 2x faster)."""
    w = {k: np.asarray(v, dtype=dtype) for k, v in dense_weights.items()}
    d = spec.embedding_dim
    n = rows.shape[0]
    rows = np.asarray(rows, dtype=dtype)
    xd = np.asarray(x, dtype=dtype)
    if spec.simple:
        x0 = np.concatenate([rows[:, :, :d].reshape(n, -1), xd], axis=1)
        sw = np.ones(rows.shape[:2], dtype=dtype)
    else:
        if slot_weights is None:
            raise ValueError("a model with pooled, narrow or wide-only groups needs slot_weights")
        sw = np.asarray(slot_weights, dtype=dtype)
        if any(spec.standardize):
            xd = (xd - w["norm/mean"]) / np.sqrt(w["norm/var"] + 1e-3)
        parts = []
        for g in spec.input_groups:
            if g.deep:
                cols = slice(g.first, g.first + g.n_slots)
                parts.append((rows[:, cols, : g.dim] * sw[:, cols, None]).sum(axis=1))
        x0 = np.concatenate([*parts, xd], axis=1)
    deep = _mlp(spec, w, x0)
    if spec.model_type == "wide_deep":
        out = deep @ w["head/kernel"] + w["head/bias"]
        wide = (rows[:, :, d] * sw).sum(axis=1, keepdims=True) + xd @ w["wide/kernel"] + w["wide/bias"]
        return (out + wide)[:, 0]
    xl = x0
    for layer in range(spec.cross_layers):
        xl = x0 * (xl @ w[f"cross/{layer}/kernel"] + w[f"cross/{layer}/bias"]) + xl
    out = np.concatenate([xl, deep], axis=1) @ w["head/kernel"] + w["head/bias"]
    return out[:, 0]


def predict(
    model: ModelExport, x: npt.NDArray[np.float32], ids: npt.NDArray[np.uint64]
) -> npt.NDArray[np.float64]:
    """Click probabilities float64[n] of a full export (sorted ids) for model inputs."""
    spec = model.spec
    rows = lookup_rows(model.ids, model.rows, ids, spec.fallback_ids())
    weights = None if spec.simple else spec.slot_weights(ids)
    z = logits(spec, model.dense, rows, x, weights).astype(np.float64, copy=False)
    return 1.0 / (1.0 + np.exp(-z))
