"""Optimizers for dense variables and for rows of the embedding pool, one update rule each.

Written out (instead of tf_keras optimizers) so that the dense weights and the sparse pool rows
follow the same rule, the slot variables are plain arrays we save, restore and reset when a
pool slot is reused, and nothing depends on Keras' optimizer checkpoint format.

adagrad: acc += g^2; w -= lr * g / (sqrt(acc) + 1e-7); acc starts at ADAGRAD_INIT.
adam:    lazy for pool rows (only rows in the batch move); bias correction by the global step.
sgd:     w -= lr * g.
`l2` adds l2 * w to the gradient of kernels and of the embedding rows in the batch.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tensorflow as tf

# Keras starts the accumulator at 0.1; with mean-of-batch gradients (~1e-2 for a rare id) that
# swamps g^2 and makes Adagrad a plain SGD for rare ids. 1e-3 measured best on Criteo (one pass,
# bench/train_quality.py): held-out AUC 0.7370 vs 0.7172 with 0.1.
ADAGRAD_INIT = 1e-3
_EPS = 1e-7
_B1, _B2 = 0.9, 0.999


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
        """Initial slot arrays for a variable of `shape`."""
        if self.kind == "adagrad":
            return [np.full(shape, ADAGRAD_INIT, np.float32)]
        return [np.zeros(shape, np.float32) for _ in range(self.n_slots)]

    def rule(
        self, w: tf.Tensor, g: tf.Tensor, slots: list[tf.Tensor], t: tf.Tensor, decay: bool
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """(new value, new slots) of `w` after gradient `g` at global step `t` (float, >= 1)."""
        if decay and self.l2:
            g = g + self.l2 * w
        if self.kind == "sgd":
            return w - self.lr * g, []
        if self.kind == "adagrad":
            acc = slots[0] + tf.square(g)
            return w - self.lr * g / (tf.sqrt(acc) + _EPS), [acc]
        m = _B1 * slots[0] + (1.0 - _B1) * g
        v = _B2 * slots[1] + (1.0 - _B2) * tf.square(g)
        lr_t = self.lr * tf.sqrt(1.0 - tf.pow(_B2, t)) / (1.0 - tf.pow(_B1, t))
        return w - lr_t * m / (tf.sqrt(v) + _EPS), [m, v]

    def apply_dense(
        self, var: tf.Variable, g: tf.Tensor, slots: list[tf.Variable], t: tf.Tensor, decay: bool
    ) -> None:
        """Update a dense variable in place."""
        new, new_slots = self.rule(var, g, [s.read_value() for s in slots], t, decay)
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
        new, new_slots = self.rule(w, g, [tf.gather(s, idx) for s in slots], t, decay=True)
        var.scatter_update(tf.IndexedSlices(new, idx))
        for slot, value in zip(slots, new_slots):
            slot.scatter_update(tf.IndexedSlices(value, idx))
