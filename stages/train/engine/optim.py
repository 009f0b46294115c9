"""Optimizers for dense variables and for rows of the embedding pool, one update rule each.

Written out (instead of tf_keras optimizers) so that the dense weights and the sparse pool rows
follow the same rule, the slot variables are plain arrays we save, restore and reset when a
pool slot is reused, and nothing depends on Keras' optimizer checkpoint format.

adagrad: acc += g^2; w -= lr * g / (sqrt(acc0 + acc) + 1e-7); acc starts at 0, acc0 is
         ROW_ACC0 for pool rows and DENSE_ACC0 for dense variables (and the fallback rows).
adam:    lazy for pool rows (only rows in the batch move); bias correction by the global step.
sgd:     w -= lr * g.
`l2` adds l2 * w to the gradient of kernels and of the embedding rows in the batch. Dense
variables whose canonical name (see models.py) starts with a prefix in DENSE_LR_SCALE use lr
times that factor (`lr_scale`), with every rule.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tensorflow as tf

# Adagrad's accumulator start acc0 sets the size of a coordinate's first steps: ~lr * g /
# sqrt(acc0) while g^2 << acc0, ~lr * sign(g) once g^2 >> acc0. Embedding gradients are small
# (mean over the batch, through the head), so a small row acc0 lets a new id's row move at once.
# Held-out AUC, Criteo one pass (bench/train_quality.py, seed 0), W&D / DCN: rows 1e-6 0.7389 /
# 0.7349; rows 1e-5 0.7394 / 0.7327; 1e-4 0.7396 / 0.7300; 1e-3 (the old single value) 0.7409
# / 0.7230. Dense acc0 1e-2 instead of 1e-3: DCN 0.7347. Keras starts at 0.1 (W&D 0.7172 with
# the old Glorot head, vs 0.7370 with 1e-3).
ROW_ACC0 = 1e-6
DENSE_ACC0 = 1e-3
# A cross kernel [D, D] (D = 26*d + 13) acts on x0 (raw dense inputs up to ~10) and an adaptive
# rule moves each of its D^2 entries by ~lr per step: at the shared lr the cross output is
# swamped by noise. DCN held-out AUC by factor: 1: 0.7291, 0.3: 0.7347, 0.1: 0.7349, 0.01: 0.7340.
DENSE_LR_SCALE: tuple[tuple[str, float], ...] = (("cross/", 0.1),)
_EPS = 1e-7
_B1, _B2 = 0.9, 0.999


def lr_scale(name: str) -> float:
    """Learning-rate factor of the dense variable with canonical name `name` (1 by default)."""
    for prefix, scale in DENSE_LR_SCALE:
        if name.startswith(prefix):
            return scale
    return 1.0


class Optimizer:
    """An update rule with `n_slots` state arrays per variable, shaped like the variable."""

    def __init__(self, kind: str, learning_rate: float, l2: float) -> None:
        if kind not in ("adagrad", "adam", "sgd"):
            raise ValueError(f"unknown optimizer {kind!r}")
        self.kind = kind
        self.lr = float(learning_rate)
        self.l2 = float(l2)
        self.n_slots = {"adagrad": 1, "adam": 2, "sgd": 0}[kind]

    def slot_init(self, shape: tuple[int, ...]) -> list[npt.NDArray[np.float32]]:
        """Initial slot arrays for a variable of `shape` (all zeros, for rows and dense alike)."""
        return [np.zeros(shape, np.float32) for _ in range(self.n_slots)]

    def rule(
        self,
        w: tf.Tensor,
        g: tf.Tensor,
        slots: list[tf.Tensor],
        t: tf.Tensor,
        decay: bool,
        lr: float,
        acc0: float,
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """(new value, new slots) of `w` after gradient `g` at global step `t` (float, >= 1),
        with learning rate `lr` and Adagrad accumulator start `acc0`."""
        if decay and self.l2:
            g = g + self.l2 * w
        if self.kind == "sgd":
            return w - lr * g, []
        if self.kind == "adagrad":
            acc = slots[0] + tf.square(g)
            return w - lr * g / (tf.sqrt(acc + acc0) + _EPS), [acc]
        m = _B1 * slots[0] + (1.0 - _B1) * g
        v = _B2 * slots[1] + (1.0 - _B2) * tf.square(g)
        lr_t = lr * tf.sqrt(1.0 - tf.pow(_B2, t)) / (1.0 - tf.pow(_B1, t))
        return w - lr_t * m / (tf.sqrt(v) + _EPS), [m, v]

    def apply_dense(
        self,
        var: tf.Variable,
        g: tf.Tensor,
        slots: list[tf.Variable],
        t: tf.Tensor,
        decay: bool,
        scale: float = 1.0,
    ) -> None:
        """Update a dense variable in place, at `scale` times the learning rate (`lr_scale`
        of its canonical name)."""
        new, new_slots = self.rule(
            var, g, [s.read_value() for s in slots], t, decay, self.lr * scale, DENSE_ACC0
        )
        var.assign(new)
        for slot, value in zip(slots, new_slots):
            slot.assign(value)

    def apply_rows(
        self,
        var: tf.Variable,
        idx: tf.Tensor,
        g: tf.Tensor,
        slots: list[tf.Variable],
        t: tf.Tensor,
    ) -> None:
        """Update rows `idx` (unique int64[k]) of `var` with gradients `g` [k, w] in place."""
        w = tf.gather(var, idx)
        new, new_slots = self.rule(
            w, g, [tf.gather(s, idx) for s in slots], t, True, self.lr, ROW_ACC0
        )
        var.scatter_update(tf.IndexedSlices(new, idx))
        for slot, value in zip(slots, new_slots):
            slot.scatter_update(tf.IndexedSlices(value, idx))
