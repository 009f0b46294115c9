"""The train stage's model engine: TensorFlow models on a sharded dynamic embedding table.

`TFEngine(config)` implements `stages.train.core.engine_protocol.Engine`.

Route chosen, by measurement (details and commands in bench/RESULTS-train.md): the id -> slot
map, admission counters and eviction are vectorised NumPy on the host (`idindex.IdIndex`, an
open-addressing map; `table.ShardTable`); rows and optimizer state live in a preallocated TF
variable pool per shard (`pool.Pool`); freed slots are reused. Distinct ids per mini-batch come
from `tf.unique_with_counts` (1.3 ms for 106k ids here, `np.unique` 26 ms). A step is a host
plan (distinct ids, the ids' all-to-all, the owner's bookkeeping: ~9 ms of NumPy for a 4,096-row
step with 20k distinct ids) and then one compiled call (`fused.CompiledSteps`) that resets new
slots, reads and exchanges rows, runs the model and applies the row gradients on their owners;
the plan of the next step runs in a helper thread meanwhile. TFRA's dynamic_embedding was
measured at 0.39 of a static embedding's samples/s before this work (issue 5), a
`MutableHashTable` + pool at 0.78 before any eviction bookkeeping; this engine's ratio, with
admission, eviction and sharding on, is in bench/RESULTS-train.md.

Run with Horovod on CPU hosts:
    horovodrun -np 2 --gloo -H localhost:2 python -m <your entrypoint>
GPU hosts: build Horovod with NCCL (`HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_WITH_TENSORFLOW=1
pip install --no-cache-dir horovod`), start one process per GPU (`horovodrun -np <gpus> -H
host1:<gpus>,...`); `dist.configure_devices` pins each process to GPU `local_rank` with memory
growth on, and the pool, dense weights and compiled steps are placed on it. The id bookkeeping
stays on the host CPU (it is NumPy) and the ids' all-to-all exchanges host arrays (Gloo/MPI);
the rows' and gradients' all-to-alls and the dense allreduce run inside the compiled call on
GPU tensors, so Horovod sends them with NCCL.
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
