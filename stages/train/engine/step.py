"""The replicated part of the model and the compiled training / scoring steps.

`Network` holds the dense weights and the fallback rows (one [n_fields, w] variable, the rows
of `hashing.fallback_ids`), replicated on every rank and kept equal by summing their gradients
over ranks. The embedding rows a step needs arrive as an input tensor `rows_u` (one row per
distinct id of the mini-batch, fetched from their owner shards); the step returns the gradient
for those rows so the engine can send it back to the owners.

The loss of a step is sum(logloss over this rank's rows) / (rows over all ranks in this step),
so summing gradients over ranks gives the mean gradient of the global mini-batch, and a rank
with 0 rows contributes zeros instead of skewing an average.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from stages.common.model_export import ModelSpec
from stages.train.engine.models import fallback_init, init_dense, logits
from stages.train.engine.optim import Optimizer

def fallback_cells(
    inv: npt.NDArray[np.int32], valid_u: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int32]:
    """Cell -> row index into [rows_u; fallback]: `inv` where the id has a row, else
    len(valid_u) + field."""
    k, n_fields = valid_u.shape[0], inv.shape[1]
    fallback = np.arange(k, k + n_fields, dtype=np.int32)[None, :]
    return np.where(valid_u[inv], inv, fallback).astype(np.int32)


AllReduce = Callable[[list[tf.Tensor]], list[tf.Tensor]]


class Network:
    """Dense weights, fallback rows, their optimizer state, and the two compiled steps."""

    def __init__(self, spec: ModelSpec, optimizer: Optimizer, seed: int, allreduce: AllReduce):
        self.spec = spec
        self.optimizer = optimizer
        self._allreduce = allreduce
        self.dense = {k: tf.Variable(v, name=k) for k, v in init_dense(spec, seed).items()}
        self.fallback = tf.Variable(fallback_init(spec), name="fallback")
        self.names = [*self.dense, "fallback"]
        self.vars = [*self.dense.values(), self.fallback]
        self.slots = [
            [tf.Variable(s) for s in optimizer.slot_init(tuple(v.shape))] for v in self.vars
        ]
        self._decay = [n.endswith("kernel") or n == "fallback" for n in self.names]
        w = spec.row_width
        common = [
            tf.TensorSpec([None, w], tf.float32),  # rows_u
            tf.TensorSpec([None, spec.n_fields], tf.int32),  # cell -> row of rows_u|fallback
            tf.TensorSpec([None, spec.n_dense], tf.float32),  # x
        ]
        self.train_step = tf.function(
            self._train_impl,
            input_signature=[
                *common,
                tf.TensorSpec([None], tf.float32),  # y
                tf.TensorSpec([], tf.float32),  # rows in this step over all ranks
                tf.TensorSpec([], tf.float32),  # global step t >= 1
            ],
        )
        self.predict_step = tf.function(self._predict_impl, input_signature=common)

    def _embed(self, rows_u: tf.Tensor, cells: tf.Tensor) -> tf.Tensor:
        # One gather from [rows_u; fallback]: the host already pointed cells of ids without a
        # row at k + field (`fallback_cells`). Cheaper than a tf.where over [n, F, w].
        return tf.gather(tf.concat([rows_u, self.fallback], axis=0), cells)

    def _predict_impl(self, rows_u: tf.Tensor, cells: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(logits(self.spec, self.dense, self._embed(rows_u, cells), x))

    def _train_impl(
        self,
        rows_u: tf.Tensor,
        cells: tf.Tensor,
        x: tf.Tensor,
        y: tf.Tensor,
        n_global: tf.Tensor,
        t: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
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
        for var, g, slots, decay in zip(self.vars, dense_grads, self.slots, self._decay):
            self.optimizer.apply_dense(var, g, slots, t, decay)
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
