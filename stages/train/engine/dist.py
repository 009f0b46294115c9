"""Collective operations for the engine: Horovod when launched by `horovodrun`, else one process.

`collectives()` decides: when the launcher's environment is present (HOROVOD_RANK, set by
`horovodrun`) or Horovod is already initialised, it initialises `horovod.tensorflow` and returns
`HorovodCollectives`; otherwise `LocalCollectives` (rank 0 of 1, every operation the identity),
so the same engine code runs in a plain Python process, under `horovodrun -np 1` and `-np 2`.

Only `horovod.tensorflow` is used: `horovod.keras` imports Keras 3 and fails next to tf_keras.
Every method is collective for Horovod: all ranks call it in the same order.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from stages.common.errors import TrainError, require


class Collectives(Protocol):
    """What the engine needs from the process group."""

    rank: int
    size: int
    local_rank: int
    local_size: int

    def alltoall(
        self, array: npt.NDArray[Any], splits: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
        """Send rows `array[sum(splits[:r]):sum(splits[:r+1])]` to rank r; return the rows
        received (in rank order) and how many came from each rank."""
        ...

    def alltoall_tensor(self, tensor: tf.Tensor, splits: tf.Tensor) -> tf.Tensor:
        """`alltoall` on tensors, usable inside `tf.function` (received splits are dropped)."""
        ...

    def allgather(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Every rank's `array` concatenated on axis 0 in rank order (first dims may differ)."""
        ...

    def allreduce_sum(self, tensors: list[tf.Tensor]) -> list[tf.Tensor]:
        """Element-wise sums over ranks; usable inside `tf.function`."""
        ...

    def broadcast(self, variables: list[tf.Variable]) -> None:
        """Set `variables` on every rank to rank 0's values."""
        ...


class LocalCollectives:
    """One process: rank 0 of 1."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1

    def alltoall(
        self, array: npt.NDArray[Any], splits: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
        return array, np.asarray(splits, np.int64)

    def alltoall_tensor(self, tensor: tf.Tensor, splits: tf.Tensor) -> tf.Tensor:
        return tensor

    def allgather(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return array

    def allreduce_sum(self, tensors: list[tf.Tensor]) -> list[tf.Tensor]:
        return tensors

    def broadcast(self, variables: list[tf.Variable]) -> None:
        return None


class HorovodCollectives:
    """`horovod.tensorflow` (Gloo on CPU hosts, NCCL for GPU tensors when built with it)."""

    def __init__(self) -> None:
        hvd: Any = require("horovod.tensorflow", "train")
        if not hvd.is_initialized():
            hvd.init()
        self._hvd = hvd
        self.rank = int(hvd.rank())
        self.size = int(hvd.size())
        self.local_rank = int(hvd.local_rank())
        self.local_size = int(hvd.local_size())
        self._seq = 0

    def _name(self, what: str) -> str:
        # Eager Horovod ops are matched across ranks by name; a counter keeps them distinct.
        self._seq += 1
        return f"freshrec_{what}_{self._seq}"

    def alltoall(
        self, array: npt.NDArray[Any], splits: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
        out, rsplits = self._hvd.alltoall(
            tf.convert_to_tensor(array),
            splits=tf.convert_to_tensor(np.asarray(splits, np.int32)),
            name=self._name("a2a"),
        )
        return out.numpy(), rsplits.numpy().astype(np.int64)

    def alltoall_tensor(self, tensor: tf.Tensor, splits: tf.Tensor) -> tf.Tensor:
        # Inside a tf.function the op is named by the traced graph, the same on every rank.
        return self._hvd.alltoall(tensor, splits=splits)[0]

    def allgather(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        result: npt.NDArray[Any] = self._hvd.allgather(
            tf.convert_to_tensor(array), name=self._name("gather")
        ).numpy()
        return result

    def allreduce_sum(self, tensors: list[tf.Tensor]) -> list[tf.Tensor]:
        return list(self._hvd.grouped_allreduce(tensors, op=self._hvd.Sum))

    def broadcast(self, variables: list[tf.Variable]) -> None:
        self._hvd.broadcast_variables(variables, root_rank=0)


def collectives() -> Collectives:
    """Horovod when launched by horovodrun (or already initialised), else one local process."""
    if "HOROVOD_RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ:
        return HorovodCollectives()
    try:
        import horovod.tensorflow as hvd  # noqa: PLC0415  (optional, only to ask)
    except ImportError:
        return LocalCollectives()
    return HorovodCollectives() if hvd.is_initialized() else LocalCollectives()


def configure_devices(local_rank: int, local_size: int) -> str:
    """Set TF threads and device placement for this process; return the device string.

    CPU: intra-op threads = cores / processes on the host (2 cores, -np 2 -> 1 each), one
    inter-op thread (the step is one chain of ops). GPU: pin GPU `local_rank`, memory growth on.
    Safe to call twice (a second call, after TF started, keeps the first settings).
    """
    gpus = tf.config.list_physical_devices("GPU")
    try:
        if gpus:
            gpu = gpus[local_rank % len(gpus)]
            tf.config.experimental.set_memory_growth(gpu, True)
            tf.config.set_visible_devices(gpu, "GPU")
        cores = os.cpu_count() or 1
        tf.config.threading.set_intra_op_parallelism_threads(max(1, cores // max(local_size, 1)))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF already initialised by the caller: its own settings stand
    return "/GPU:0" if gpus else "/CPU:0"


def check_same_world(saved_size: int, size: int) -> None:
    """TrainError unless a checkpoint written by `saved_size` ranks is restored by `size`."""
    if saved_size != size:
        raise TrainError(
            f"checkpoint was written by {saved_size} ranks, this run has {size}: restart with "
            f"horovodrun -np {saved_size}, or export and start a new model"
        )
