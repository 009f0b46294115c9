"""The compiled steps: one `tf.function` call per training or scoring step.

A step's host side (`engine.TFEngine._plan`) finds the distinct ids, sends them to their owner
shards and resolves them there (admission, eviction, new slots). Everything after that runs in
one compiled call, so rows and gradients never leave TensorFlow:

1. the owner re-initialises the slots it just handed to new ids (`Pool.reset`);
2. it reads the rows of the ids it received, with an "admitted" flag, and sends them back
   (all-to-all; the identity in one process);
3. the requester runs the model (`Network.update`: ids without a row use their slot's
   fallback row; dense gradients are summed over ranks); a layout that is not `spec.simple`
   also takes the mini-batch's slot weights (`StepPlan.weights`) as the last input;
4. the row gradients go back to the owners (all-to-all), which sum those of an id requested by
   several ranks and apply the optimizer to their pool rows.

Program order is execution order here: TensorFlow orders the stateful ops of a `tf.function`
on the same variable as written, so a slot is reset before it is read, and read before it is
updated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from stages.train.engine.pool import Pool
from stages.train.engine.step import Network, fallback_cells

AllToAll = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclass(frozen=True)
class StepPlan:
    """The host side of one step, in the order the compiled call consumes it.

    Sent ids are the mini-batch's distinct ids grouped by owner rank (`send_splits` per rank);
    `inv` points every cell of the mini-batch at its id's position in that send order.
    The owner's view: `owner_slots` per id it received (`recv_splits` per sender; -1 = no row),
    `owner_unique` the distinct valid slots among them and `owner_segments`, per received id
    with a slot, the index of its slot in `owner_unique` (unused in one process, where the
    received ids are distinct already). `new_slots` / `new_rows`: slots handed to new ids in
    this step and their initial rows. `evicted`: ids the owner evicted while resolving.
    """

    inv: npt.NDArray[np.int32]
    send_splits: npt.NDArray[np.int32]
    recv_splits: npt.NDArray[np.int32]
    owner_slots: npt.NDArray[np.int64]
    owner_unique: npt.NDArray[np.int64]
    owner_segments: npt.NDArray[np.int64]
    new_slots: npt.NDArray[np.int64]
    new_rows: npt.NDArray[np.float32]
    evicted: int
    weights: npt.NDArray[np.float32] | None = None


class CompiledSteps:
    """`train` and `predict`: one compiled call each per step, given a `StepPlan`."""

    def __init__(self, net: Network, pool: Pool, alltoall: AllToAll, size: int) -> None:
        self.net = net
        self.pool = pool
        self._alltoall = alltoall
        self._size = size
        spec = net.spec
        self._weighted = not spec.simple
        routing = [
            tf.TensorSpec([None, spec.n_fields], tf.int32),  # inv
            tf.TensorSpec([None], tf.int32),  # send_splits
            tf.TensorSpec([None], tf.int32),  # recv_splits
            tf.TensorSpec([None], tf.int64),  # owner_slots
            tf.TensorSpec([None, spec.n_dense], tf.float32),  # x
        ]
        weights = [tf.TensorSpec([None, spec.n_fields], tf.float32)] if self._weighted else []
        self._train = tf.function(
            self._train_impl,
            input_signature=[
                *routing,
                tf.TensorSpec([None], tf.int64),  # owner_unique
                tf.TensorSpec([None], tf.int64),  # owner_segments
                tf.TensorSpec([None], tf.int64),  # new_slots
                tf.TensorSpec([None, spec.row_width], tf.float32),  # new_rows
                tf.TensorSpec([None], tf.float32),  # y
                tf.TensorSpec([], tf.float32),  # loss divisor: the global mini-batch size
                tf.TensorSpec([], tf.float32),  # global step t >= 1
                *weights,  # slot weights, unless the layout is simple
            ],
        )
        self._predict = tf.function(self._predict_impl, input_signature=[*routing, *weights])

    def _weights(self, plan: StepPlan) -> list[npt.NDArray[np.float32]]:
        if not self._weighted:
            return []
        if plan.weights is None:
            raise ValueError("this layout needs the slot weights in the step plan")
        return [plan.weights]

    def train(
        self, plan: StepPlan, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32],
        n_global: float, t: float,
    ) -> float:
        """One training step; returns the sum of this rank's logloss."""
        loss_sum = self._train(
            plan.inv, plan.send_splits, plan.recv_splits, plan.owner_slots, x,
            plan.owner_unique, plan.owner_segments, plan.new_slots, plan.new_rows, y,
            np.float32(n_global), np.float32(t), *self._weights(plan),
        )  # fmt: skip
        return float(loss_sum)

    def predict(self, plan: StepPlan, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """float32[n] probabilities of this rank's rows; changes nothing."""
        p = self._predict(
            plan.inv, plan.send_splits, plan.recv_splits, plan.owner_slots, x,
            *self._weights(plan),
        )  # fmt: skip
        result: npt.NDArray[np.float32] = p.numpy()
        return result

    def _rows(
        self, inv: tf.Tensor, recv_splits: tf.Tensor, owner_slots: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(rows_u in send order, cells): steps 2 and the cell mapping of 3."""
        valid = owner_slots >= 0
        rows = self.pool.read(tf.maximum(owner_slots, 0))
        index = self.net.fallback_index
        if self._size == 1:
            return rows, fallback_cells(inv, valid, index)
        answer = tf.concat([rows, tf.cast(valid, tf.float32)[:, None]], axis=1)
        back = self._alltoall(answer, recv_splits)
        return back[:, :-1], fallback_cells(inv, back[:, -1] > 0.5, index)

    def _predict_impl(
        self, inv: tf.Tensor, send_splits: tf.Tensor, recv_splits: tf.Tensor,
        owner_slots: tf.Tensor, x: tf.Tensor, sw: tf.Tensor | None = None,
    ) -> tf.Tensor:  # fmt: skip
        rows_u, cells = self._rows(inv, recv_splits, owner_slots)
        return self.net.probabilities(rows_u, cells, x, sw)

    def _train_impl(
        self, inv: tf.Tensor, send_splits: tf.Tensor, recv_splits: tf.Tensor,
        owner_slots: tf.Tensor, x: tf.Tensor, owner_unique: tf.Tensor,
        owner_segments: tf.Tensor, new_slots: tf.Tensor, new_rows: tf.Tensor, y: tf.Tensor,
        n_global: tf.Tensor, t: tf.Tensor, sw: tf.Tensor | None = None,
    ) -> tf.Tensor:  # fmt: skip
        self.pool.reset(new_slots, new_rows)
        rows_u, cells = self._rows(inv, recv_splits, owner_slots)
        loss_sum, row_grad = self.net.update(rows_u, cells, x, y, n_global, t, sw)
        grads = row_grad if self._size == 1 else self._alltoall(row_grad, send_splits)
        grads = tf.boolean_mask(grads, owner_slots >= 0)
        if self._size > 1:  # an id asked for by several ranks: sum its gradients
            grads = tf.math.unsorted_segment_sum(
                grads, owner_segments, tf.shape(owner_unique, out_type=tf.int64)[0]
            )
        self.pool.apply(owner_unique, grads, t)
        return loss_sum
