"""The contract between the resident trainer (the loop) and the model engine.

The loop owns this file; the engine (`stages.train.engine.TFEngine`) implements `Engine`.
With Horovod every rank holds one engine; the loop hands each rank a disjoint share of every
window's rows and calls the collective methods (`train`, `table_size`, `save`, `export`) on every
rank in the same order, so a rank with no rows still takes part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from stages.common.model_export import ModelExport, ModelSpec
from stages.common.samples import SampleBatch

OPTIMIZERS = ("adagrad", "adam", "sgd")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine builds and trains its model. Validated at construction.

    `table_capacity` bounds the admitted ids over all shards (beyond it the least-used are
    evicted); an id gets its own embedding row once seen `admit_after` times (counted on its
    owner shard), before that it uses its field's fallback row; `evict_after_steps > 0` also
    evicts ids unseen for that many training steps. A new model predicts `prior_ctr` for every
    input (the click rate expected before any training). `spec` and the hashing behind the ids
    are fixed for the model's lifetime.
    """

    spec: ModelSpec
    batch_size: int = 1024
    learning_rate: float = 0.05
    optimizer: str = "adagrad"
    l2: float = 0.0
    table_capacity: int = 1_000_000
    admit_after: int = 2
    evict_after_steps: int = 0
    seed: int = 0
    prior_ctr: float = 0.25

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        if not 0.0 < self.prior_ctr < 1.0:
            raise ValueError(f"prior_ctr must be in (0, 1), got {self.prior_ctr}")
        if self.table_capacity < 1:
            raise ValueError(f"table_capacity must be >= 1, got {self.table_capacity}")
        if self.admit_after < 1:
            raise ValueError(f"admit_after must be >= 1, got {self.admit_after}")
        if self.evict_after_steps < 0:
            raise ValueError(f"evict_after_steps must be >= 0, got {self.evict_after_steps}")


@dataclass(frozen=True)
class TrainResult:
    """What one `Engine.train` call did on this rank.

    samples: rows trained on this rank; steps: optimizer steps taken (mini-batches); loss: mean
    training logloss over those rows before each step's update (nan with 0 rows); seconds: wall
    time of the call; table_size: admitted ids over all shards after the call; evicted: ids
    evicted during the call over all shards.
    """

    samples: int
    steps: int
    loss: float
    seconds: float
    table_size: int
    evicted: int


@runtime_checkable
class Engine(Protocol):
    """A trainable CTR model with a sharded embedding table.

    `rank` and `size` are the Horovod rank and world size (0 and 1 without Horovod). Methods
    marked collective must be called by every rank, in the same order, the same number of times.
    """

    rank: int
    size: int

    def predict(self, batch: SampleBatch) -> npt.NDArray[np.float64]:
        """float64[n] click probabilities for this rank's rows, same order.

        Reads only: no weight update, no admission counting, no step. Collective when the
        table is sharded (every rank calls it once per window, possibly with 0 rows).
        """
        ...

    def train(self, batch: SampleBatch, batch_size: int | None = None) -> TrainResult:
        """Train on this rank's rows, in order, in mini-batches of `batch_size` (None: the
        configured one; every rank passes the same).

        Collective: every rank calls it once per window, even with 0 rows; unequal row counts
        across ranks must not hang.
        """
        ...

    def table_size(self) -> int:
        """Admitted ids over all shards (collective)."""
        ...

    def save(self, directory: Path) -> None:
        """Write the whole training state into `directory` (exists, empty): tables, admission
        counters, optimizer state, dense weights, step. Each rank writes its own shard
        (collective)."""
        ...

    def snapshot(self) -> Callable[[Path], None]:
        """This rank's part of what `save` writes, copied in memory now, and a function that
        writes it into a directory later, from another thread, as `save` would have (not
        collective: the trainer's checkpoint writer coordinates the ranks)."""
        ...

    def restore(self, directory: Path) -> None:
        """Load what `save` wrote; the world size must be the one that saved (collective)."""
        ...

    def export(self, export_seq: int, full: bool, meta: dict[str, Any]) -> ModelExport | None:
        """The servable model as of now (collective).

        Rank 0 returns a `ModelExport` with `export_seq` and `meta`: the full table when `full`,
        else a delta of the rows added or changed and the ids evicted since the previous `export`
        call (base_seq = that call's export_seq). Other ranks return None. The export predicts
        exactly like `stages.common.reference_model` and like `predict`, within 1e-5.
        """
        ...
