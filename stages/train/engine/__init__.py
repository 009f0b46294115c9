"""The train stage's model engine: TensorFlow models on a sharded dynamic embedding table.

`TFEngine(config)` implements `stages.train.core.engine_protocol.Engine`.

Route chosen, by measurement (details and commands in bench/RESULTS-train.md): the id -> slot
map, admission counters and eviction are vectorised NumPy on the host (`idindex.IdIndex`, an
open-addressing map; `table.ShardTable`); rows and optimizer state live in a preallocated TF
variable pool per shard (`pool.Pool`), read with `tf.gather` and updated with sparse scatter
updates; freed slots are reused. Distinct ids per mini-batch come from `tf.unique_with_counts`
(1.3 ms for 106k ids here, `np.unique` 26 ms). The bookkeeping of one 4,096-row step (20k
distinct ids, admission + eviction) costs ~12 ms of NumPy; the compiled step looks its rows up
in one gather from [rows of the batch's ids; fallback rows] (a `tf.where` over [n, 26, w] made
the step slower than the static model's). Measured on 2 shared, noisy cores, with admission,
eviction and sharding on, as a fraction of a static tf_keras Embedding's samples/s: 0.75 (W&D)
and 0.82 (DCN-v2) in one process, 0.62 and 0.73 with 2 Horovod ranks. TFRA's dynamic_embedding was measured at 0.39 of static before this work (issue
5), a `MutableHashTable` + pool at 0.78 before any eviction bookkeeping.

Run with Horovod on CPU hosts:
    horovodrun -np 2 --gloo -H localhost:2 python -m <your entrypoint>
GPU hosts: build Horovod with NCCL (`HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_WITH_TENSORFLOW=1
pip install --no-cache-dir horovod`), start one process per GPU (`horovodrun -np <gpus> -H
host1:<gpus>,...`); `dist.configure_devices` pins each process to GPU `local_rank` with memory
growth on, and the pool, dense weights and compiled steps are placed on it. The id bookkeeping
stays on the host CPU (it is NumPy), and the all-to-alls exchange host arrays (Gloo/MPI), so
NCCL is used for the dense-gradient allreduce only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stages.train.engine.engine import TFEngine

__all__ = ["TFEngine"]


def __getattr__(name: str) -> Any:
    # TensorFlow is imported on first use of TFEngine, not when the package is imported.
    if name == "TFEngine":
        from stages.train.engine.engine import TFEngine

        return TFEngine
    raise AttributeError(name)
