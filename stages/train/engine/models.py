"""Wide&Deep and DCN-v2 in TensorFlow, exactly as `stages/common/reference_model.py` defines them.

The dense weights are plain float32 `tf.Variable`s keyed by their canonical export names
(`deep/<i>/kernel`, `head/bias`, `wide/kernel`, `cross/<l>/kernel`, ...), so export is a dict
copy and the forward pass reads like the reference. Initialisation is NumPy, seeded: Glorot
uniform kernels, zero biases, except that the kernels into the logit start at zero (`init_dense`),
so a new model predicts the constant PRIOR_CTR; embedding rows get a per-id deterministic init
(`init_rows`), so a row's starting value does not depend on which shard or slot holds it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tensorflow as tf

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
    d0 = spec.n_fields * spec.embedding_dim + spec.n_dense
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


def fallback_init(spec: ModelSpec) -> npt.NDArray[np.float32]:
    """Initial fallback rows [n_fields, row_width]: zeros (an unknown value says nothing)."""
    return np.zeros((spec.n_fields, spec.row_width), np.float32)


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
    spec: ModelSpec, dense: dict[str, tf.Variable], emb: tf.Tensor, x: tf.Tensor
) -> tf.Tensor:
    """float32[n] logits from embedding rows float32[n, F, w] and dense inputs float32[n, 13]."""
    d = spec.embedding_dim
    n = tf.shape(emb)[0]
    x0 = tf.concat([tf.reshape(emb[:, :, :d], [n, spec.n_fields * d]), x], axis=1)
    h = x0
    for i in range(len(spec.hidden_units)):
        h = tf.nn.relu(tf.matmul(h, dense[f"deep/{i}/kernel"]) + dense[f"deep/{i}/bias"])
    if spec.model_type == "wide_deep":
        out = tf.matmul(h, dense["head/kernel"]) + dense["head/bias"]
        wide = (
            tf.reduce_sum(emb[:, :, d], axis=1, keepdims=True)
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
