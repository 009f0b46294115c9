"""The replicated part of the model: dense weights, fallback rows, and the graph-side math.

`Network` holds the dense weights and the fallback rows (one [n_fields, w] variable, the rows
of `hashing.fallback_ids`), replicated on every rank and kept equal by summing their gradients
over ranks. The embedding rows a step needs arrive as a tensor `rows_u` (one row per distinct id
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
from stages.train.engine.models import PRIOR_CTR, fallback_init, init_dense, logits
from stages.train.engine.optim import Optimizer, lr_scale

AllReduce = Callable[[list[tf.Tensor]], list[tf.Tensor]]


def fallback_cells(inv: tf.Tensor, admitted: tf.Tensor) -> tf.Tensor:
    """int32[n, F] cell -> row of [rows_u; fallback]: `inv` where the id has a row (admitted
    bool[k]), else k + field (the field's fallback row)."""
    k = tf.shape(admitted, out_type=tf.int32)[0]
    fallback = k + tf.range(tf.shape(inv)[1], dtype=tf.int32)[None, :]
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

    def probabilities(self, rows_u: tf.Tensor, cells: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """float32[n] click probabilities (graph code)."""
        return tf.sigmoid(logits(self.spec, self.dense, self._embed(rows_u, cells), x))

    def update(
        self,
        rows_u: tf.Tensor,
        cells: tf.Tensor,
        x: tf.Tensor,
        y: tf.Tensor,
        n_global: tf.Tensor,
        t: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One optimizer step of the dense weights (gradients summed over ranks) from this
        rank's rows; returns (sum of logloss, gradient float32[k, w] of `rows_u`). Graph code."""
        with tf.GradientTape() as tape:
            tape.watch(rows_u)
            z = logits(self.spec, self.dense, self._embed(rows_u, cells), x)
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
        """The dense weights under their canonical names (copies)."""
        return {k: v.numpy() for k, v in self.dense.items()}

    def state(self) -> dict[str, npt.NDArray[np.float32]]:
        """Every variable and optimizer slot, keyed `var/<name>` and `slot<i>/<name>`."""
        out: dict[str, npt.NDArray[np.float32]] = {}
        for name, var, slots in zip(self.names, self.vars, self.slots):
            out[f"var/{name}"] = var.numpy()
            for i, slot in enumerate(slots):
                out[f"slot{i}/{name}"] = slot.numpy()
        return out

    def load_state(self, state: dict[str, npt.NDArray[np.float32]]) -> None:
        for name, var, slots in zip(self.names, self.vars, self.slots):
            var.assign(state[f"var/{name}"])
            for i, slot in enumerate(slots):
                slot.assign(state[f"slot{i}/{name}"])
