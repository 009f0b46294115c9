"""`TFEngine`: the `Engine` protocol on TensorFlow, with a sharded dynamic embedding table.

One training step on rank r (all ranks step together; see `train` for unequal row counts):

1. distinct ids of the mini-batch (`tf.unique_with_counts`), grouped by owner `id % size`;
2. all-to-all: ids and their occurrence counts go to their owners;
3. each owner resolves them in its `ShardTable` (admission counting, eviction, new slots
   re-initialised in its `Pool`) and answers the rows and an "admitted" flag (all-to-all back);
4. the compiled step (`Network.train_step`) runs the model, using the field's fallback row for
   ids without a row, sums the dense gradients over ranks and updates the dense weights;
5. all-to-all: the row gradients go back to the owners, which apply the optimizer to their
   pool rows (gradients of an id requested by several ranks are summed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from stages.common.errors import TrainError
from stages.common.hashing import fallback_ids
from stages.common.model_export import ModelExport
from stages.common.samples import SampleBatch
from stages.train.core.engine_protocol import EngineConfig, TrainResult
from stages.train.engine import persist
from stages.train.engine.dist import Collectives, collectives, configure_devices
from stages.train.engine.optim import Optimizer
from stages.train.engine.pool import Pool
from stages.train.engine.step import Network, fallback_cells
from stages.train.engine.table import ShardTable

PREDICT_CHUNK = 8192  # rows per scoring step (bounds memory on large windows)


class _Route:
    """Where a step's distinct ids went: send order, splits, and the owner's view."""

    def __init__(
        self, order: npt.NDArray[np.int64] | None, splits: npt.NDArray[np.int64]
    ) -> None:
        self.order = order
        self.splits = splits
        self.recv_splits = np.zeros_like(splits)
        self.owner_slots = np.empty(0, np.int64)  # per received id, -1 when not admitted
        self.owner_unique = np.empty(0, np.int64)  # size > 1: distinct valid slots ...
        self.owner_segments = np.empty(0, np.int64)  # ... and, per valid received id, its index


class TFEngine:
    """Wide&Deep or DCN-v2 with a dynamic embedding sharded over Horovod ranks by `id % size`.

    `collectives` defaults to Horovod when launched by horovodrun, else one local process.
    The table holds at most `config.table_capacity` admitted ids over all shards (shard r holds
    capacity // size, plus one for r < capacity % size).
    """

    def __init__(self, config: EngineConfig, comm: Collectives | None = None) -> None:
        self.config = config
        self.spec = config.spec
        self._comm = comm if comm is not None else collectives()
        self.rank = self._comm.rank
        self.size = self._comm.size
        if config.table_capacity < self.size:
            raise TrainError(f"table_capacity {config.table_capacity} < {self.size} ranks")
        self.device = configure_devices(self._comm.local_rank, self._comm.local_size)
        shard_cap = config.table_capacity // self.size + int(
            self.rank < config.table_capacity % self.size
        )
        self.table = ShardTable(shard_cap, config.admit_after, config.evict_after_steps)
        optimizer = Optimizer(config.optimizer, config.learning_rate, config.l2)
        with tf.device(self.device):
            self.pool = Pool(self.spec, shard_cap, optimizer, config.seed)
            self.net = Network(self.spec, optimizer, config.seed, self._comm.allreduce_sum)
        self._comm.broadcast(self.net.vars)
        self.step = 0
        self.last_export_seq: int | None = None

    # -- routing ------------------------------------------------------------------------------
    def _distinct(self, ids: npt.NDArray[np.uint64]) -> tuple[Any, Any, Any]:
        flat = np.ascontiguousarray(ids, np.uint64).reshape(-1).view(np.int64)
        res = tf.unique_with_counts(tf.constant(flat), out_idx=tf.int32)
        uniq = res.y.numpy().view(np.uint64)
        inv = res.idx.numpy().reshape(ids.shape)
        return uniq, inv, res.count.numpy().astype(np.int64)

    def _fetch(
        self, uniq: npt.NDArray[np.uint64], counts: npt.NDArray[np.int64], train: bool
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], _Route, int]:
        """Rows and admitted flags of `uniq` from their owners (steps 1-3 of the docstring).
        Rows of ids without a row are unspecified (the step uses the fallback rows)."""
        if self.size > 1:
            return self._fetch_sharded(uniq, counts, train)
        route = _Route(None, np.array([uniq.size], np.int64))
        evicted = 0
        if train:
            res = self.table.resolve(uniq, counts, self.step)
            slots, evicted = res.slots, res.evicted
            self.pool.reset(res.new_slots, res.new_ids)
        else:
            slots = self.table.lookup(uniq)
        route.owner_slots = slots
        return self.pool.gather(np.maximum(slots, 0)), slots >= 0, route, evicted

    def _fetch_sharded(
        self, uniq: npt.NDArray[np.uint64], counts: npt.NDArray[np.int64], train: bool
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], _Route, int]:
        owner = (uniq % np.uint64(self.size)).astype(np.int64)
        # Stable sort of small ints is a radix sort in NumPy: O(k).
        order = np.argsort(owner.astype(np.int16), kind="stable")
        route = _Route(order, np.bincount(owner, minlength=self.size).astype(np.int64))
        packed = np.stack([uniq[order].view(np.int64), counts[order]], axis=1)
        recv, route.recv_splits = self._comm.alltoall(packed, route.splits)
        rids = np.ascontiguousarray(recv[:, 0]).view(np.uint64)
        evicted = 0
        if not train:
            slots = self.table.lookup(rids)
        else:  # the same id may come from several ranks
            res_u = tf.unique(tf.constant(rids.view(np.int64)), out_idx=tf.int64)
            uids, uinv = res_u.y.numpy().view(np.uint64), res_u.idx.numpy()
            ucounts = np.bincount(uinv, weights=recv[:, 1], minlength=uids.size).astype(np.int64)
            res = self.table.resolve(uids, ucounts, self.step)
            slots, evicted = res.slots[uinv], res.evicted
            self.pool.reset(res.new_slots, res.new_ids)
            uvalid = res.slots >= 0
            route.owner_unique = res.slots[uvalid]
            route.owner_segments = (np.cumsum(uvalid) - 1)[uinv[slots >= 0]]
        route.owner_slots = slots
        valid = slots >= 0
        answer = np.zeros((slots.size, self.spec.row_width + 1), np.float32)
        answer[valid, :-1] = self.pool.gather(slots[valid])
        answer[:, -1] = valid
        back, _ = self._comm.alltoall(answer, route.recv_splits)
        rows = np.empty((uniq.size, self.spec.row_width), np.float32)
        rows[order] = back[:, :-1]
        flags = np.empty(uniq.size, np.bool_)
        flags[order] = back[:, -1] > 0.5
        return rows, flags, route, evicted

    def _push_grads(self, route: _Route, grads: npt.NDArray[np.float32]) -> None:
        """Step 5: row gradients to their owners, optimizer on the owners' pool rows."""
        valid = route.owner_slots >= 0
        if route.order is None:  # one rank: the slots are distinct already
            self.pool.apply(route.owner_slots[valid], grads[valid], float(self.step))
            return
        recv, _ = self._comm.alltoall(np.ascontiguousarray(grads[route.order]), route.splits)
        self.pool.apply(route.owner_unique, recv[valid], float(self.step), route.owner_segments)

    # -- the protocol ----------------------------------------------------------------------
    def _lockstep(self, n: int) -> npt.NDArray[np.int64]:
        """Every rank's row count, so all ranks run the same number of collective steps."""
        return np.asarray(self._comm.allgather(np.array([n], np.int64)), np.int64)

    def predict(self, batch: SampleBatch) -> npt.NDArray[np.float64]:
        """float64[n] probabilities for this rank's rows; reads only. Collective."""
        counts = self._lockstep(len(batch))
        steps = int(-(-counts.max() // PREDICT_CHUNK))
        out = []
        for s in range(steps):
            part = batch.take(slice(s * PREDICT_CHUNK, (s + 1) * PREDICT_CHUNK))
            uniq, inv, cnt = self._distinct(part.ids)
            rows, flags, _, _ = self._fetch(uniq, cnt, train=False)
            p = self.net.predict_step(rows, fallback_cells(inv, flags), part.dense)
            out.append(p.numpy().astype(np.float64))
        return np.concatenate([*out, np.empty(0, np.float64)])

    def train(self, batch: SampleBatch) -> TrainResult:
        """One pass over this rank's rows in mini-batches of `batch_size`. Collective: the ranks
        run max(ceil(n_r / batch_size)) steps; a rank out of rows steps with 0 rows."""
        start = time.perf_counter()
        size_b = self.config.batch_size
        counts = self._lockstep(len(batch))
        steps = int(-(-counts.max() // size_b))
        loss_sum, evicted = 0.0, 0
        for s in range(steps):
            part = batch.take(slice(s * size_b, (s + 1) * size_b))
            n_global = float(np.clip(counts - s * size_b, 0, size_b).sum())
            self.step += 1
            uniq, inv, cnt = self._distinct(part.ids)
            rows, flags, route, ev = self._fetch(uniq, cnt, train=True)
            evicted += ev
            y = part.label.astype(np.float32)
            lsum, grads = self.net.train_step(
                rows, fallback_cells(inv, flags), part.dense, y,
                np.float32(n_global), np.float32(self.step),
            )
            loss_sum += float(lsum)
            self._push_grads(route, grads.numpy())
        totals = self._comm.allgather(np.array([[len(self.table), evicted]], np.int64))
        n = len(batch)
        return TrainResult(
            samples=n,
            steps=steps if n else 0,
            loss=loss_sum / n if n else float("nan"),
            seconds=time.perf_counter() - start,
            table_size=int(totals[:, 0].sum()),
            evicted=int(totals[:, 1].sum()),
        )

    def table_size(self) -> int:
        """Admitted ids over all shards. Collective."""
        return int(self._comm.allgather(np.array([len(self.table)], np.int64)).sum())

    def save(self, directory: Path) -> None:
        """Write this rank's shard, the replicated weights and counters. Collective."""
        persist.save(self, directory)
        self._comm.allgather(np.zeros(1, np.int64))  # all shards written before anyone goes on

    def restore(self, directory: Path) -> None:
        """Load what `save` wrote with the same world size. Collective."""
        persist.restore(self, directory)
        self._comm.allgather(np.zeros(1, np.int64))

    def export(self, export_seq: int, full: bool, meta: dict[str, Any]) -> ModelExport | None:
        """Full table or delta since the previous export, on rank 0 (None elsewhere). Collective."""
        if not full and self.last_export_seq is None:
            raise TrainError("the first export after a start must be full (no base to diff)")
        if full:
            ids, slots = self.table.admitted()
            self.table.mark_exported()
            gone = np.empty(0, np.uint64)
        else:
            ids, slots, gone = self.table.take_delta()
        rows = self.pool.gather(slots)
        all_ids = self._comm.allgather(ids.view(np.int64)).view(np.uint64)
        all_rows = self._comm.allgather(rows)
        all_gone = self._comm.allgather(gone.view(np.int64)).view(np.uint64)
        base = self.last_export_seq
        self.last_export_seq = export_seq
        if self.rank != 0:
            return None
        ids = np.concatenate([fallback_ids(self.spec.n_fields), all_ids])
        rows = np.concatenate([self.net.fallback.numpy(), all_rows])
        order = np.argsort(ids, kind="stable")
        return ModelExport(
            spec=self.spec,
            kind="full" if full else "delta",
            export_seq=export_seq,
            base_seq=None if full else base,
            dense=self.net.dense_numpy(),
            ids=ids[order],
            rows=rows[order],
            evicted=np.unique(all_gone) if not full else np.empty(0, np.uint64),
            meta=dict(meta),
        )
