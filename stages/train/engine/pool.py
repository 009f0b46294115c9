"""One shard's embedding rows and their optimizer state: preallocated TF variables, by slot.

The pool has `capacity` rows of `row_width` floats (on the engine's device); `ShardTable` says
which id owns which slot. A slot handed to a new id is re-initialised (row from
`models.init_rows`, optimizer slots to their start values), so freed slots are reused without
leaking an evicted id's state.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from stages.common.model_export import ModelSpec
from stages.train.engine.models import init_rows
from stages.train.engine.optim import Optimizer


class Pool:
    """Rows float32[capacity, w] and the optimizer's slot arrays of the same shape."""

    def __init__(self, spec: ModelSpec, capacity: int, optimizer: Optimizer, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        self.optimizer = optimizer
        shape = (capacity, spec.row_width)
        self.rows = tf.Variable(np.zeros(shape, np.float32), name="pool")
        self.slots = [
            tf.Variable(v, name=f"pool_slot{i}") for i, v in enumerate(optimizer.slot_init(shape))
        ]
        self._slot_starts = [float(v.flat[0]) if v.size else 0.0 for v in optimizer.slot_init((1,))]
        self._gather = tf.function(
            lambda idx: tf.gather(self.rows, idx),
            input_signature=[tf.TensorSpec([None], tf.int64)],
        )
        self._segment_sum = tf.function(
            tf.math.unsorted_segment_sum,
            input_signature=[
                tf.TensorSpec([None, spec.row_width], tf.float32),
                tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([], tf.int64),
            ],
        )
        self._apply = tf.function(
            self._apply_impl,
            input_signature=[
                tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([None, spec.row_width], tf.float32),
                tf.TensorSpec([], tf.float32),
            ],
        )

    def variables(self) -> list[tf.Variable]:
        return [self.rows, *self.slots]

    def gather(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Rows at `slots` (valid slots only)."""
        if slots.size == 0:
            return np.zeros((0, self.spec.row_width), np.float32)
        result: npt.NDArray[np.float32] = self._gather(tf.constant(slots, tf.int64)).numpy()
        return result

    def reset(self, slots: npt.NDArray[np.int64], ids: npt.NDArray[np.uint64]) -> None:
        """Give `slots` to `ids`: initial rows, initial optimizer state."""
        if slots.size == 0:
            return
        idx = tf.constant(slots, tf.int64)
        self.rows.scatter_update(tf.IndexedSlices(init_rows(self.spec, ids, self.seed), idx))
        for var, start in zip(self.slots, self._slot_starts):
            fill = np.full((slots.size, self.spec.row_width), start, np.float32)
            var.scatter_update(tf.IndexedSlices(fill, idx))

    def apply(
        self,
        slots: npt.NDArray[np.int64],
        grads: npt.NDArray[np.float32],
        t: float,
        segments: npt.NDArray[np.int64] | None = None,
    ) -> None:
        """Optimizer step on the unique `slots`. Without `segments`, `grads[i]` is the gradient
        of `slots[i]`; with them, of `slots[segments[i]]` (gradients of a slot are summed)."""
        if slots.size == 0:
            return
        if segments is not None:
            grads = self._segment_sum(
                tf.constant(grads, tf.float32), tf.constant(segments, tf.int64),
                tf.constant(slots.size, tf.int64),
            )
        self._apply(tf.constant(slots, tf.int64), grads, tf.constant(t, tf.float32))

    def _apply_impl(self, slots: tf.Tensor, grads: tf.Tensor, t: tf.Tensor) -> None:
        self.optimizer.apply_rows(self.rows, slots, grads, self.slots, t)

    def state(self) -> dict[str, npt.NDArray[np.float32]]:
        out = {"rows": self.rows.numpy()}
        out.update({f"slot{i}": v.numpy() for i, v in enumerate(self.slots)})
        return out

    def load_state(self, state: dict[str, npt.NDArray[np.float32]]) -> None:
        self.rows.assign(state["rows"])
        for i, var in enumerate(self.slots):
            var.assign(state[f"slot{i}"])
