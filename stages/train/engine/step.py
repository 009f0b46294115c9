"""The replicated part of the model: dense weights, fallback rows, and the graph-side math.

`Network` holds the dense weights and the fallback rows (one [m, w] variable, the rows of the
layout's distinct fallback ids, `models.fallback_table`), replicated on every rank and kept
equal by summing their gradients over ranks. With standardised dense inputs it also holds their
running mean and variance (`norm/mean`, `norm/var`, exported with the dense weights): each
training step first folds in its mini-batch's statistics (summed over ranks), then runs the
model; they get no gradient. The embedding rows a step needs arrive as a tensor `rows_u` (one row per distinct id
of the mini-batch, fetched from their owner shards); `update` returns the gradient for those
rows so the caller can send it back to the owners. `update` and `probabilities` are meant to be
called inside a `tf.function` (`fused.CompiledSteps` compiles the whole step around them).

The loss of a step is sum(logloss over this rank's rows) / n_global, where the engine passes
the global mini-batch size (batch_size * ranks, also for a short last mini-batch: every row
weighs the same, see `engine.NOMINAL_BATCH_LOSS`), so summing gradients over ranks gives the
gradient of the global mini-batch, and a rank with 0 rows contributes zeros instead of skewing
an average.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from stages.common.model_export import ModelSpec
from stages.train.engine.models import (
    PRIOR_CTR,
    fallback_init,
    fallback_table,
    init_dense,
    init_norm,
    logits,
)
from stages.train.engine.optim import Optimizer, lr_scale

AllReduce = Callable[[list[tf.Tensor]], list[tf.Tensor]]
# The running statistics of standardised inputs weigh the past as at most this many rows, so
# they follow a drifting stream (a mini-batch of n rows weighs at least n / NORM_MEMORY).
NORM_MEMORY = 100_000.0


def fallback_cells(
    inv: tf.Tensor, admitted: tf.Tensor, index: tf.Tensor | None = None
) -> tf.Tensor:
    """int32[n, F] cell -> row of [rows_u; fallback]: `inv` where the id has a row (admitted
    bool[k]), else k + the slot's fallback row (`index` int32[F], default the slot itself)."""
    k = tf.shape(admitted, out_type=tf.int32)[0]
    if index is None:
        fallback = k + tf.range(tf.shape(inv)[1], dtype=tf.int32)[None, :]
    else:
        fallback = k + index[None, :]
    return tf.where(tf.gather(admitted, inv), inv, fallback)


class Network:
    """Dense weights, fallback rows and their optimizer state."""

    def __init__(
        self,
        spec: ModelSpec,
        optimizer: Optimizer,
        seed: int,
        allreduce: AllReduce,
        prior_ctr: float = PRIOR_CTR,
    ):
        self.spec = spec
        self.optimizer = optimizer
        self._allreduce = allreduce
        initial = init_dense(spec, seed, prior_ctr)
        self.dense = {k: tf.Variable(v, name=k) for k, v in initial.items()}
        self.fallback = tf.Variable(fallback_init(spec), name="fallback")
        self.fallback_ids, index = fallback_table(spec)
        identity = np.array_equal(index, np.arange(spec.n_fields))
        self.fallback_index = None if identity else tf.constant(index, tf.int32)
        self.norm = {k: tf.Variable(v, name=k, trainable=False)
                     for k, v in init_norm(spec).items()}
        self.norm_count = tf.Variable(0.0, name="norm_count", trainable=False)
        self._standardize = tf.constant(np.asarray(spec.standardize or [False] * spec.n_dense))
        self.weights = {**self.dense, **self.norm}  # what the forward pass reads
        self.names = [*self.dense, "fallback"]
        self.vars = [*self.dense.values(), self.fallback]
        self.slots = [
            [tf.Variable(s) for s in optimizer.slot_init(tuple(v.shape))] for v in self.vars
        ]
        self._decay = [n.endswith("kernel") or n == "fallback" for n in self.names]
        self.lr_scales = [lr_scale(n) for n in self.names]

    def _embed(self, rows_u: tf.Tensor, cells: tf.Tensor) -> tf.Tensor:
        # One gather from [rows_u; fallback] with cells from `fallback_cells`: cheaper than a
        # tf.where over [n, F, w].
        return tf.gather(tf.concat([rows_u, self.fallback], axis=0), cells)

    def probabilities(
        self, rows_u: tf.Tensor, cells: tf.Tensor, x: tf.Tensor, sw: tf.Tensor | None = None
    ) -> tf.Tensor:
        """float32[n] click probabilities (graph code); `sw`: slot weights unless simple."""
        return tf.sigmoid(logits(self.spec, self.weights, self._embed(rows_u, cells), x, sw))

    def _fold_statistics(self, x: tf.Tensor) -> None:
        """Fold this step's rows (all ranks) into the running mean and variance of the
        standardised columns (parallel-variance merge; past rows capped at NORM_MEMORY)."""
        mean, var, count = self.norm["norm/mean"], self.norm["norm/var"], self.norm_count
        xc = x - mean  # centred on the running mean: no cancellation in float32
        n = tf.cast(tf.shape(x)[0], tf.float32)
        n, s1, s2 = self._allreduce(
            [n[None], tf.reduce_sum(xc, axis=0), tf.reduce_sum(xc * xc, axis=0)]
        )
        n = n[0]
        total = tf.maximum(count + n, 1.0)
        delta = s1 / tf.maximum(n, 1.0)
        batch_var = tf.maximum(s2 / tf.maximum(n, 1.0) - delta * delta, 0.0)
        new_mean = mean + delta * (n / total)
        new_var = (count * var + n * batch_var + delta * delta * (count * n / total)) / total
        keep = tf.logical_or(tf.logical_not(self._standardize), n <= 0.0)
        mean.assign(tf.where(keep, mean, new_mean))
        var.assign(tf.where(keep, var, new_var))
        count.assign(tf.minimum(count + n, NORM_MEMORY))

    def update(
        self,
        rows_u: tf.Tensor,
        cells: tf.Tensor,
        x: tf.Tensor,
        y: tf.Tensor,
        n_global: tf.Tensor,
        t: tf.Tensor,
        sw: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One optimizer step of the dense weights (gradients summed over ranks) from this
        rank's rows; returns (sum of logloss, gradient float32[k, w] of `rows_u`). Graph code.
        `sw`: slot weights float32[n, F] unless the spec is simple."""
        if self.norm:
            self._fold_statistics(x)
        with tf.GradientTape() as tape:
            tape.watch(rows_u)
            z = logits(self.spec, self.weights, self._embed(rows_u, cells), x, sw)
            losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)
            loss_sum = tf.reduce_sum(losses)
            loss = loss_sum / tf.maximum(n_global, 1.0)
        grads = tape.gradient(loss, [rows_u, *self.vars])
        row_grad = tf.convert_to_tensor(grads[0])
        dense_grads = [
            tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads[1:], self.vars)
        ]
        dense_grads = self._allreduce(dense_grads)
        for var, g, slots, decay, scale in zip(
            self.vars, dense_grads, self.slots, self._decay, self.lr_scales
        ):
            self.optimizer.apply_dense(var, g, slots, t, decay, scale)
        return loss_sum, row_grad

    def dense_numpy(self) -> dict[str, npt.NDArray[np.float32]]:
        """The dense weights (and running statistics) under their canonical names (copies)."""
        return {k: v.numpy() for k, v in self.weights.items()}

    def state(self) -> dict[str, npt.NDArray[np.float32]]:
        """Every variable and optimizer slot, keyed `var/<name>` and `slot<i>/<name>`."""
        out: dict[str, npt.NDArray[np.float32]] = {}
        for name, var, slots in zip(self.names, self.vars, self.slots):
            out[f"var/{name}"] = var.numpy()
            for i, slot in enumerate(slots):
                out[f"slot{i}/{name}"] = slot.numpy()
        if self.norm:
            out.update({f"var/{k}": v.numpy() for k, v in self.norm.items()})
            out["var/norm/count"] = self.norm_count.numpy()
        return out

    def load_state(self, state: dict[str, npt.NDArray[np.float32]]) -> None:
        for name, var, slots in zip(self.names, self.vars, self.slots):
            var.assign(state[f"var/{name}"])
            for i, slot in enumerate(slots):
                slot.assign(state[f"slot{i}/{name}"])
        if self.norm:
            for k, v in self.norm.items():
                v.assign(state[f"var/{k}"])
            self.norm_count.assign(state["var/norm/count"])
