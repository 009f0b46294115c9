"""`TFEngine`: the `Engine` protocol on TensorFlow, with a sharded dynamic embedding table.

One training step on rank r (all ranks step together; see `train` for unequal row counts):

1. host (`_plan`): distinct ids of the mini-batch (`tf.unique_with_counts`), grouped by owner
   `id % size`; all-to-all: ids and their occurrence counts go to their owners; each owner
   resolves them in its `ShardTable` (admission counting, eviction, slots for new ids and their
   initial rows);
2. one compiled call (`fused.CompiledSteps.train`): new slots re-initialised, rows sent back
   with an "admitted" flag, the model step (fallback rows for ids without a row, dense
   gradients summed over ranks), row gradients sent to their owners and applied to their pools.

The host part of step s + 1 runs in a helper thread while step s's compiled call runs
(TensorFlow releases the GIL), which hides most of the bookkeeping and, with several ranks, the
wait for the ids' all-to-all. The outcome is the same as running them one after the other: the
table only changes in `_plan`, in step order, and a slot that plan s + 1 hands to a new id is
reset inside call s + 1, after call s has used it. While a `train` call runs, only the helper
thread issues eager collectives (the compiled call's are graph ops with their own names), so
every rank issues them in the same order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from stages.common.errors import TrainError
from stages.common.model_export import ModelExport
from stages.common.samples import SampleBatch
from stages.train.core.engine_protocol import EngineConfig, TrainResult
from stages.train.engine import persist
from stages.train.engine.dist import Collectives, collectives, configure_devices
from stages.train.engine.fused import CompiledSteps, StepPlan
from stages.train.engine.optim import Optimizer
from stages.train.engine.pool import Pool
from stages.train.engine.step import Network
from stages.train.engine.table import ShardTable

PREDICT_CHUNK = 8192  # rows per scoring step (bounds memory on large windows)
# A step's loss is sum(logloss) / (batch_size * ranks), not / (rows in the step): every row
# weighs the same whatever step it lands in. Dividing by the rows made a window's short last
# mini-batch (a 15-row remainder at batch 256) a full-size step on 15 rows, taken last, right
# before the export: held-out AUC 0.7358 after rows 1-7,951 vs 0.7381 after rows 1-7,936
# (bench/RESULTS-train.md, "Quality at the defaults"). False restores the old rule, for
# bench/train_quality_split.py's `--variant nominal=0` only.
NOMINAL_BATCH_LOSS = True
_NO_INTS = np.empty(0, np.int64)


class TFEngine:
    """Wide&Deep or DCN-v2 with a dynamic embedding sharded over Horovod ranks by `id % size`.

    `collectives` defaults to Horovod when launched by horovodrun, else one local process.
    The table holds at most `config.table_capacity` admitted ids over all shards (shard r holds
    capacity // size, plus one for r < capacity % size).
    """

    def __init__(self, config: EngineConfig, comm: Collectives | None = None) -> None:
        self.config = config
        self.spec = config.spec
        self._weighted = not config.spec.simple  # pooled, narrow, wide-only or standardised
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
            self.net = Network(
                self.spec, optimizer, config.seed, self._comm.allreduce_sum, config.prior_ctr
            )
            self.compiled = CompiledSteps(
                self.net, self.pool, self._comm.alltoall_tensor, self.size
            )
        self._comm.broadcast(self.net.vars)
        self.step = 0
        self.last_export_seq: int | None = None
        self._planner: ThreadPoolExecutor | None = None
        self.overlap_plans = True  # False: plan each step inline (same results, slower)

    # -- routing (host) ----------------------------------------------------------------------
    def _plan(self, ids: npt.NDArray[np.uint64], step: int | None) -> StepPlan:
        """The host side of a step over `ids` [n, F]: training step `step`, or scoring (None,
        which changes nothing); with the slot weights unless the layout is simple."""
        plan = self._route(ids, step)
        if not self._weighted:
            return plan
        return replace(plan, weights=self.spec.slot_weights(ids))

    def _route(self, ids: npt.NDArray[np.uint64], step: int | None) -> StepPlan:
        flat = np.ascontiguousarray(ids, np.uint64).reshape(-1).view(np.int64)
        res = tf.unique_with_counts(tf.constant(flat), out_idx=tf.int32)
        uniq = res.y.numpy().view(np.uint64)
        inv = res.idx.numpy().reshape(ids.shape)
        counts = res.count.numpy().astype(np.int64)
        if self.size == 1:
            splits = np.array([uniq.size], np.int32)
            return self._resolve(uniq, counts, inv, splits, splits, step)
        owner = (uniq % np.uint64(self.size)).astype(np.int16)
        order = np.argsort(owner, kind="stable")  # stable sort of small ints: a radix sort
        position = np.empty(uniq.size, np.int32)
        position[order] = np.arange(uniq.size, dtype=np.int32)
        send = np.bincount(owner, minlength=self.size).astype(np.int64)
        packed = np.stack([uniq[order].view(np.int64), counts[order]], axis=1)
        recv, recv_splits = self._comm.alltoall(packed, send)
        rids = np.ascontiguousarray(recv[:, 0]).view(np.uint64)
        return self._resolve(
            rids, recv[:, 1], position[inv], send.astype(np.int32),
            recv_splits.astype(np.int32), step,
        )  # fmt: skip

    def _resolve(
        self,
        rids: npt.NDArray[np.uint64],
        counts: npt.NDArray[np.int64],
        inv: npt.NDArray[np.int32],
        send_splits: npt.NDArray[np.int32],
        recv_splits: npt.NDArray[np.int32],
        step: int | None,
    ) -> StepPlan:
        """The owner's part: slots of the received ids `rids` (distinct in one process; the
        same id may come from several ranks otherwise); `inv` maps cells to sent ids."""
        if step is None:
            slots = self.table.lookup(rids)
            return StepPlan(inv, send_splits, recv_splits, slots, _NO_INTS, _NO_INTS,
                            _NO_INTS, np.empty((0, self.spec.row_width), np.float32), 0)
        if self.size == 1:
            res = self.table.resolve(rids, counts, step)
            slots, unique, segments = res.slots, res.slots[res.slots >= 0], _NO_INTS
        else:
            res_u = tf.unique(tf.constant(rids.view(np.int64)), out_idx=tf.int64)
            uids, uinv = res_u.y.numpy().view(np.uint64), res_u.idx.numpy()
            ucounts = np.bincount(uinv, weights=counts, minlength=uids.size).astype(np.int64)
            res = self.table.resolve(uids, ucounts, step)
            slots = res.slots[uinv]
            uvalid = res.slots >= 0
            unique = res.slots[uvalid]
            segments = (np.cumsum(uvalid) - 1)[uinv[slots >= 0]]
        return StepPlan(
            inv, send_splits, recv_splits, slots, unique, segments,
            res.new_slots, self.pool.initial_rows(res.new_ids), res.evicted,
        )  # fmt: skip

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
            p = self.compiled.predict(self._plan(part.ids, None), part.dense)
            out.append(p.astype(np.float64))
        return np.concatenate([*out, np.empty(0, np.float64)])

    def train(self, batch: SampleBatch, batch_size: int | None = None) -> TrainResult:
        """One pass over this rank's rows in mini-batches of `batch_size` (None: the configured
        one; the same on every rank). Collective: the ranks
        run max(ceil(n_r / batch_size)) steps; a rank out of rows steps with 0 rows. A step's
        loss is its rows' summed logloss / (batch_size * ranks) (`NOMINAL_BATCH_LOSS`), so
        every row weighs the same and a short last mini-batch takes a short step."""
        start = time.perf_counter()
        size_b = batch_size or self.config.batch_size
        counts = self._lockstep(len(batch))
        steps = int(-(-counts.max() // size_b))
        parts = [batch.take(slice(s * size_b, (s + 1) * size_b)) for s in range(steps)]
        first = self.step + 1
        plans = self._plans([p.ids for p in parts], first)
        loss_sum, evicted = 0.0, 0
        for s, (part, plan) in enumerate(zip(parts, plans)):
            self.step = first + s
            n_global = float(
                size_b * counts.size if NOMINAL_BATCH_LOSS
                else np.clip(counts - s * size_b, 0, size_b).sum()
            )
            evicted += plan.evicted
            y = part.label.astype(np.float32)
            loss_sum += self.compiled.train(plan, part.dense, y, n_global, float(self.step))
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

    def _plans(self, ids: list[npt.NDArray[np.uint64]], first: int) -> Iterator[StepPlan]:
        """The plans of training steps first, first + 1, ... in order, each computed in the
        helper thread while the caller runs the previous step (see the module docstring)."""
        if len(ids) < 2 or not self.overlap_plans:
            for s, part in enumerate(ids):
                yield self._plan(part, first + s)
            return
        if self._planner is None:
            self._planner = ThreadPoolExecutor(1, thread_name_prefix="freshrec-plan")
        pending: Future[StepPlan] = self._planner.submit(self._plan, ids[0], first)
        try:
            for s in range(len(ids)):
                plan = pending.result()
                if s + 1 < len(ids):
                    pending = self._planner.submit(self._plan, ids[s + 1], first + s + 1)
                yield plan
        finally:  # the caller failed or stopped early: no plan may still be changing the table
            wait([pending])

    def table_size(self) -> int:
        """Admitted ids over all shards. Collective."""
        return int(self._comm.allgather(np.array([len(self.table)], np.int64)).sum())

    def save(self, directory: Path) -> None:
        """Write this rank's shard, the replicated weights and counters. Collective."""
        persist.save(self, directory)
        self._comm.allgather(np.zeros(1, np.int64))  # all shards written before anyone goes on

    def snapshot(self) -> Callable[[Path], None]:
        """This rank's state copied in memory, and the function that writes it where `save`
        would (`persist.snapshot`; not collective)."""
        return persist.snapshot(self)

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
        ids = np.concatenate([self.net.fallback_ids, all_ids])
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
