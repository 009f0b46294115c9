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
        self._gather = tf.function(
            lambda idx: tf.gather(self.rows, idx),
            input_signature=[tf.TensorSpec([None], tf.int64)],
        )

    def variables(self) -> list[tf.Variable]:
        return [self.rows, *self.slots]

    def gather(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Rows at `slots` (valid slots only), eagerly, as NumPy (export, tests)."""
        if slots.size == 0:
            return np.zeros((0, self.spec.row_width), np.float32)
        result: npt.NDArray[np.float32] = self._gather(tf.constant(slots, tf.int64)).numpy()
        return result

    def initial_rows(self, ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.float32]:
        """Host-side initial rows of `ids` for `reset` (a pure function of id and seed)."""
        return init_rows(self.spec, ids, self.seed)

    # -- graph code: called inside the compiled steps (`fused.CompiledSteps`) ---------------
    def reset(self, slots: tf.Tensor, rows: tf.Tensor) -> None:
        """Give `slots` (int64[j]) new owners: rows float32[j, w] (from `models.init_rows`),
        optimizer slots at zero (their start, `Optimizer.slot_init`)."""
        idx = tf.cast(slots, tf.int64)
        self.rows.scatter_update(tf.IndexedSlices(rows, idx))
        zeros = tf.zeros_like(rows)
        for var in self.slots:
            var.scatter_update(tf.IndexedSlices(zeros, idx))

    def read(self, slots: tf.Tensor) -> tf.Tensor:
        """Rows at `slots` (int64[k], every slot valid)."""
        return tf.gather(self.rows, slots)

    def apply(self, slots: tf.Tensor, grads: tf.Tensor, t: tf.Tensor) -> None:
        """Optimizer step on unique `slots` (int64[k]) with gradients float32[k, w]."""
        self.optimizer.apply_rows(self.rows, slots, grads, self.slots, t)

    def state(self) -> dict[str, npt.NDArray[np.float32]]:
        out = {"rows": self.rows.numpy()}
        out.update({f"slot{i}": v.numpy() for i, v in enumerate(self.slots)})
        return out

    def load_state(self, state: dict[str, npt.NDArray[np.float32]]) -> None:
        self.rows.assign(state["rows"])
        for i, var in enumerate(self.slots):
            var.assign(state[f"slot{i}"])
