"""Wide&Deep and DCN-v2 in TensorFlow, exactly as `stages/common/reference_model.py` defines them.

The dense weights are plain float32 `tf.Variable`s keyed by their canonical export names
(`deep/<i>/kernel`, `head/bias`, `wide/kernel`, `cross/<l>/kernel`, ...), so export is a dict
copy and the forward pass reads like the reference. Initialisation is NumPy, seeded: Glorot
uniform kernels, zero biases, except that the kernels into the logit start at zero (`init_dense`),
so a new model predicts the constant PRIOR_CTR; embedding rows get a per-id deterministic init
(`init_rows`), so a row's starting value does not depend on which shard or slot holds it.

Any schema layout (`ModelSpec.groups`): a `spec.simple` layout (Criteo's) runs the plain
concatenation of every slot's row, exactly as before layouts existed. Otherwise `logits` takes
the slot weights float32[n, F] (`ModelSpec.slot_weights`, computed on the host per batch) and
pools, narrows and drops groups like the reference; standardised dense inputs use the running
statistics `norm/mean`, `norm/var` (`init_norm`; kept by `step.Network`, not trained).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from collections.abc import Mapping

from stages.common.hashing import splitmix64
from stages.common.model_export import ModelSpec

ROW_INIT_SCALE = 0.05  # uniform(-s, s) for the deep part of a new row; the wide weight starts at 0
# Click rate a new model predicts (head/bias = logit(PRIOR_CTR)); Criteo's is about 0.22-0.26.
# The first window's logloss is then ~0.51 instead of 0.69 at 0.5 (bench/RESULTS-train.md).
PRIOR_CTR = 0.25
# Kernels that start at zero: they map to the logit, and with Glorot-uniform values on dense
# inputs sign*log1p(x) (up to ~10) a new model gave extreme predictions (first-window logloss
# 2.1 for W&D, 0.97 for DCN). Their gradient is not zero at the start, so they still learn.
_ZERO_KERNELS = ("head/kernel", "wide/kernel")


def dense_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of every dense weight of `spec`."""
    d0 = spec.deep_width
    shapes: dict[str, tuple[int, ...]] = {}
    width = d0
    for i, units in enumerate(spec.hidden_units):
        shapes[f"deep/{i}/kernel"] = (width, units)
        shapes[f"deep/{i}/bias"] = (units,)
        width = units
    if spec.model_type == "wide_deep":
        shapes["head/kernel"] = (width, 1)
        shapes["wide/kernel"] = (spec.n_dense, 1)
        shapes["wide/bias"] = (1,)
    else:
        for layer in range(spec.cross_layers):
            shapes[f"cross/{layer}/kernel"] = (d0, d0)
            shapes[f"cross/{layer}/bias"] = (d0,)
        shapes["head/kernel"] = (d0 + width, 1)
    shapes["head/bias"] = (1,)
    return shapes


def init_dense(
    spec: ModelSpec, seed: int, prior_ctr: float = PRIOR_CTR
) -> dict[str, npt.NDArray[np.float32]]:
    """Initial dense weights: the model predicts `prior_ctr` (in (0, 1)) for every input.

    Glorot-uniform kernels, zero biases, except: `head/kernel` and `wide/kernel` are zero and
    `head/bias` is logit(prior_ctr); cross kernels are scaled down (x0.1) so that the cross
    network starts close to the identity map x_{l+1} ~ x_l.
    """
    if not 0.0 < prior_ctr < 1.0:
        raise ValueError(f"prior_ctr must be in (0, 1), got {prior_ctr}")
    rng = np.random.default_rng(seed)
    out: dict[str, npt.NDArray[np.float32]] = {}
    for name, shape in dense_shapes(spec).items():
        if name.endswith("bias") or name in _ZERO_KERNELS:
            out[name] = np.zeros(shape, np.float32)
            continue
        limit = np.sqrt(6.0 / (shape[0] + shape[1]))
        if name.startswith("cross/"):
            limit *= 0.1
        out[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
    out["head/bias"][:] = np.log(prior_ctr / (1.0 - prior_ctr))
    return out


def init_norm(spec: ModelSpec) -> dict[str, npt.NDArray[np.float32]]:
    """The running statistics of standardised dense inputs, `norm/mean` 0 and `norm/var` 1
    [n_dense] (they stay so on unmarked columns); none when nothing is standardised."""
    if not any(spec.standardize):
        return {}
    return {"norm/mean": np.zeros(spec.n_dense, np.float32),
            "norm/var": np.ones(spec.n_dense, np.float32)}


def fallback_table(spec: ModelSpec) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int32]]:
    """(ids uint64[m], index int32[n_fields]): the distinct fallback ids in order of first
    use (slots of a shared table share one), and each slot's row among them. For a layout of
    distinct tables (Criteo's) that is `spec.fallback_ids()` and 0..n_fields-1."""
    per_slot = spec.fallback_ids()
    _, first, index = np.unique(per_slot, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # unique's order -> first-use order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return per_slot[np.sort(first)], rank[index].astype(np.int32)


def fallback_init(spec: ModelSpec) -> npt.NDArray[np.float32]:
    """Initial fallback rows [m, row_width] (`fallback_table`): zeros (an unknown value says
    nothing)."""
    return np.zeros((fallback_table(spec)[0].size, spec.row_width), np.float32)


def init_rows(spec: ModelSpec, ids: npt.NDArray[np.uint64], seed: int) -> npt.NDArray[np.float32]:
    """Initial rows float32[k, row_width] for `ids`: a pure function of (id, column, seed)."""
    cols = np.arange(spec.embedding_dim, dtype=np.uint64)
    salt = splitmix64(np.array([seed], np.uint64) + np.uint64(0x5EED))[0]
    with np.errstate(over="ignore"):
        bits = splitmix64((ids[:, None] ^ salt) + cols[None, :] * np.uint64(0x9E3779B97F4A7C15))
    unit = (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    rows = np.zeros((ids.shape[0], spec.row_width), np.float32)
    rows[:, : spec.embedding_dim] = ((unit * 2.0 - 1.0) * ROW_INIT_SCALE).astype(np.float32)
    return rows


def logits(
    spec: ModelSpec,
    dense: Mapping[str, tf.Variable],
    emb: tf.Tensor,
    x: tf.Tensor,
    weights: tf.Tensor | None = None,
) -> tf.Tensor:
    """float32[n] logits from embedding rows float32[n, F, w] and dense inputs float32[n, D];
    `weights` float32[n, F] (slot weights) is needed unless `spec.simple`."""
    d = spec.embedding_dim
    if spec.simple:
        n = tf.shape(emb)[0]
        x0 = tf.concat([tf.reshape(emb[:, :, :d], [n, spec.n_fields * d]), x], axis=1)
    else:
        if weights is None:
            raise ValueError("a model with pooled, narrow or wide-only groups needs slot weights")
        if "norm/mean" in dense:
            x = (x - dense["norm/mean"]) * tf.math.rsqrt(dense["norm/var"] + 1e-3)
        x0 = tf.concat([*_group_vectors(spec, emb, weights), x], axis=1)
    h = x0
    for i in range(len(spec.hidden_units)):
        h = tf.nn.relu(tf.matmul(h, dense[f"deep/{i}/kernel"]) + dense[f"deep/{i}/bias"])
    if spec.model_type == "wide_deep":
        out = tf.matmul(h, dense["head/kernel"]) + dense["head/bias"]
        wide_ids = emb[:, :, d] if spec.simple else emb[:, :, d] * weights
        wide = (
            tf.reduce_sum(wide_ids, axis=1, keepdims=True)
            + tf.matmul(x, dense["wide/kernel"])
            + dense["wide/bias"]
        )
        return (out + wide)[:, 0]
    xl = x0
    for layer in range(spec.cross_layers):
        cross = tf.matmul(xl, dense[f"cross/{layer}/kernel"]) + dense[f"cross/{layer}/bias"]
        xl = x0 * cross + xl
    out = tf.matmul(tf.concat([xl, h], axis=1), dense["head/kernel"]) + dense["head/bias"]
    return out[:, 0]


def _group_vectors(spec: ModelSpec, emb: tf.Tensor, weights: tf.Tensor) -> list[tf.Tensor]:
    """The deep groups' vectors [n, dim_g], in group order: a single slot's first dim_g floats
    (its weight is 1), or the weighted sum over a pooled group's slots."""
    parts = []
    for g in spec.input_groups:
        if not g.deep:
            continue
        if g.n_slots == 1 and g.pooling == "none":
            parts.append(emb[:, g.first, : g.dim])
            continue
        cols = slice(g.first, g.first + g.n_slots)
        parts.append(tf.reduce_sum(emb[:, cols, : g.dim] * weights[:, cols, None], axis=1))
    return parts
