"""One shard's embedding-table bookkeeping: id -> pool slot, admission counters, eviction, deltas.

Pure NumPy: the row values and optimizer slots live in the engine's pool variables (TensorFlow);
this class only decides which pool slot holds which id. Invariants (unit-tested):

- at most `capacity` ids are admitted (own a slot) at any time; slots are reused after eviction;
- an id is admitted once its owner has counted it `admit_after` times (occurrences in training
  batches); until then it has no slot and the model uses its field's fallback row;
- the admission counters are bounded too (`counter_capacity` ids); when full, the least counted,
  oldest candidates are forgotten (they start counting again);
- with `evict_after_steps > 0`, an id (admitted or counting) unseen for that many steps is
  dropped; past `capacity`, admitting evicts the least used (ties: the oldest) ids that were not
  seen in the current step, in bulk (5% of the capacity at once) to keep eviction off the
  per-step path; if there is still no room, the least counted candidates wait (stay counting);
- evicted ids are remembered until the next export (`take_delta`), unless admitted again.

Sharding is the engine's business: a shard simply receives the ids it owns (`id % size == rank`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stages.train.engine.idindex import IdIndex, Ids, Ints

_BULK_FRACTION = 20  # capacity eviction frees at least capacity / 20 slots at once


@dataclass(frozen=True)
class Resolved:
    """The outcome of looking up a batch of unique ids on their owner shard.

    slots: int64[k] pool slot per id, -1 when not admitted (use the fallback row);
    new_slots: int64[j] slots assigned in this call, whose rows must be (re)initialised;
    new_ids: uint64[j] the ids now in `new_slots`; evicted: ids evicted during this call.
    """

    slots: Ints
    new_slots: Ints
    new_ids: Ids
    evicted: int


def _pop(stack: Ints, top: int, k: int) -> tuple[Ints, int]:
    return stack[top - k : top][::-1].copy(), top - k


class ShardTable:
    """Admission, eviction and dirty tracking for `capacity` pool slots of one shard."""

    def __init__(
        self, capacity: int, admit_after: int, evict_after_steps: int, counter_capacity: int = 0
    ) -> None:
        if capacity < 1 or admit_after < 1 or evict_after_steps < 0:
            raise ValueError("capacity and admit_after must be >= 1, evict_after_steps >= 0")
        self.capacity = capacity
        self.admit_after = admit_after
        self.evict_after_steps = evict_after_steps
        self.counter_capacity = counter_capacity or max(64, 2 * capacity)
        self.index = IdIndex(min(capacity, 1 << 16))
        self.slot_ids = np.zeros(capacity, np.uint64)
        self.occupied = np.zeros(capacity, np.bool_)
        self.last_seen = np.zeros(capacity, np.int64)
        self.use_count = np.zeros(capacity, np.int64)
        self.dirty = np.zeros(capacity, np.bool_)
        self.free = np.arange(capacity - 1, -1, -1, dtype=np.int64)  # a stack: top is free[n-1]
        self.n_free = capacity
        self.cindex = IdIndex(min(self.counter_capacity, 1 << 16))
        self.c_ids = np.zeros(self.counter_capacity, np.uint64)
        self.c_used = np.zeros(self.counter_capacity, np.bool_)
        self.c_count = np.zeros(self.counter_capacity, np.int64)
        self.c_seen = np.zeros(self.counter_capacity, np.int64)
        self.c_free = np.arange(self.counter_capacity - 1, -1, -1, dtype=np.int64)
        self.c_n_free = self.counter_capacity
        self.evicted_pending: list[Ids] = []

    def __len__(self) -> int:
        return self.capacity - self.n_free

    # -- reads ------------------------------------------------------------------------------
    def lookup(self, ids: Ids) -> Ints:
        """Slots of `ids` (-1 when not admitted). Changes nothing."""
        return self.index.get(ids)

    # -- training ---------------------------------------------------------------------------
    def resolve(self, ids: Ids, counts: Ints, step: int) -> Resolved:
        """Slots for unique `ids` seen `counts` times in training step `step`, admitting ids
        that reach `admit_after` (evicting if needed). Marks every returned slot dirty."""
        ids = np.asarray(ids, np.uint64)
        counts = np.asarray(counts, np.int64)
        slots = self.index.get(ids)
        hit = slots >= 0
        hs = slots[hit]
        self.last_seen[hs] = step
        self.use_count[hs] = np.minimum(self.use_count[hs] + counts[hit], 1 << 40)
        self.dirty[hs] = True
        miss = np.flatnonzero(~hit)
        evicted = 0
        new_slots = np.empty(0, np.int64)
        new_ids = np.empty(0, np.uint64)
        if miss.size:
            ready, totals = self._count(ids[miss], counts[miss], step)
            if ready.size:
                order = miss[ready][np.argsort(-totals[ready], kind="stable")]
                evicted = self._make_room(order.size, step)
                take = order[: min(order.size, self.n_free)]
                rest = order[take.size :]
                if rest.size:  # no room even after eviction: they keep counting
                    self._remember(ids[rest], totals_for(ids, miss, totals, rest), step)
                new_ids = ids[take]
                new_slots, self.n_free = _pop(self.free, self.n_free, take.size)
                self.slot_ids[new_slots] = new_ids
                self.occupied[new_slots] = True
                self.last_seen[new_slots] = step
                self.use_count[new_slots] = counts[take]
                self.dirty[new_slots] = True
                self.index.put_new(new_ids, new_slots)
                slots[take] = new_slots
        # Age eviction scans the whole shard, so it runs every evict_after_steps/8 steps: an id
        # goes between evict_after_steps and 1.125x that many steps after it was last seen.
        if self.evict_after_steps and step % max(1, self.evict_after_steps // 8) == 0:
            evicted += self.evict_aged(step)
        return Resolved(slots, new_slots, new_ids, evicted)

    def _count(self, ids: Ids, counts: Ints, step: int) -> tuple[Ints, Ints]:
        """Add `counts` to the candidates' counters; return (positions in `ids` that reached
        `admit_after`, total count per id). Ready ids leave the counter table."""
        cpos = self.cindex.get(ids)
        known = cpos >= 0
        totals = counts.copy()
        totals[known] += self.c_count[cpos[known]]
        ready = totals >= self.admit_after
        done = cpos[known & ready]
        if done.size:
            self._forget(done)
        upd = cpos[known & ~ready]
        self.c_count[upd] = totals[known & ~ready]
        self.c_seen[upd] = step
        new = np.flatnonzero(~known & ~ready)
        if new.size:
            self._remember(ids[new], totals[new], step)
        return np.flatnonzero(ready), totals

    def _remember(self, ids: Ids, totals: Ints, step: int) -> None:
        """Put absent candidate ids into the counter table, forgetting old ones if full."""
        if ids.size > self.c_n_free:
            used = np.flatnonzero(self.c_used & (self.c_seen < step))
            need = min(used.size, max(ids.size - self.c_n_free, self.counter_capacity // 10))
            key = self.c_count[used] * (step + 2) + self.c_seen[used]
            self._forget(used[np.argpartition(key, need - 1)[:need]] if need else used[:0])
        keep = min(ids.size, self.c_n_free)
        ids, totals = ids[:keep], totals[:keep]
        pos, self.c_n_free = _pop(self.c_free, self.c_n_free, keep)
        self.c_ids[pos] = ids
        self.c_used[pos] = True
        self.c_count[pos] = totals
        self.c_seen[pos] = step
        self.cindex.put_new(ids, pos)

    def _forget(self, cpos: Ints) -> None:
        self.cindex.delete(self.c_ids[cpos])
        self.c_used[cpos] = False
        self.c_free[self.c_n_free : self.c_n_free + cpos.size] = cpos
        self.c_n_free += cpos.size

    def _make_room(self, need: int, step: int) -> int:
        """Evict least used ids not seen in `step` so that `need` slots are free, if possible."""
        if need <= self.n_free:
            return 0
        cand = np.flatnonzero(self.occupied & (self.last_seen < step))
        k = min(cand.size, max(need - self.n_free, self.capacity // _BULK_FRACTION))
        if k == 0:
            return 0
        key = self.use_count[cand] * (step + 2) + self.last_seen[cand]
        victims = cand[np.argpartition(key, k - 1)[:k]] if k < cand.size else cand
        self.evict_slots(victims)
        return int(victims.size)

    def evict_aged(self, step: int) -> int:
        """Drop admitted ids and candidates unseen for `evict_after_steps` steps; return how
        many admitted ids were evicted."""
        if not self.evict_after_steps:
            return 0
        limit = step - self.evict_after_steps
        victims = np.flatnonzero(self.occupied & (self.last_seen <= limit))
        if victims.size:
            self.evict_slots(victims)
        stale = np.flatnonzero(self.c_used & (self.c_seen <= limit))
        if stale.size:
            self._forget(stale)
        return int(victims.size)

    def evict_slots(self, slots: Ints) -> None:
        """Free `slots` (occupied, unique) and record their ids for the next delta."""
        ids = self.slot_ids[slots].copy()
        self.index.delete(ids)
        self.occupied[slots] = False
        self.dirty[slots] = False
        self.free[self.n_free : self.n_free + slots.size] = slots
        self.n_free += slots.size
        self.evicted_pending.append(ids)

    # -- export ----------------------------------------------------------------------------
    def take_delta(self) -> tuple[Ids, Ints, Ids]:
        """(ids, slots) changed since the previous call, and the ids evicted since then and not
        admitted again; clears both records."""
        slots = np.flatnonzero(self.dirty & self.occupied)
        ids = self.slot_ids[slots].copy()
        gone = np.concatenate([*self.evicted_pending, np.empty(0, np.uint64)])
        gone = np.unique(gone)
        if gone.size:
            gone = gone[self.index.get(gone) < 0]
        self.dirty[:] = False
        self.evicted_pending = []
        return ids, slots, gone

    def mark_exported(self) -> None:
        """Forget the dirty set and the evicted ids (after a full export)."""
        self.take_delta()

    def admitted(self) -> tuple[Ids, Ints]:
        """(ids, slots) of every admitted id, slot order."""
        slots = np.flatnonzero(self.occupied)
        return self.slot_ids[slots].copy(), slots

    # -- state -----------------------------------------------------------------------------
    _STATE = ("slot_ids", "occupied", "last_seen", "use_count", "dirty", "free",
              "c_ids", "c_used", "c_count", "c_seen", "c_free")

    def state(self) -> dict[str, npt.NDArray[np.generic]]:
        """Every array needed to rebuild this table (the hash indexes are derived)."""
        out: dict[str, npt.NDArray[np.generic]] = {k: getattr(self, k) for k in self._STATE}
        out["n_free"] = np.array([self.n_free, self.c_n_free], np.int64)
        out["evicted_pending"] = np.concatenate([*self.evicted_pending, np.empty(0, np.uint64)])
        return out

    def load_state(self, state: dict[str, npt.NDArray[np.generic]]) -> None:
        """Inverse of `state`; the capacities must match."""
        if state["slot_ids"].shape != (self.capacity,) or state["c_ids"].shape != (
            self.counter_capacity,
        ):
            raise ValueError("saved table has another capacity")
        for key in self._STATE:
            setattr(self, key, np.array(state[key], dtype=getattr(self, key).dtype))
        self.n_free, self.c_n_free = (int(v) for v in state["n_free"])
        self.evicted_pending = [np.asarray(state["evicted_pending"], np.uint64)]
        self.index = IdIndex(int(self.occupied.sum()))
        slots = np.flatnonzero(self.occupied)
        self.index.put_new(self.slot_ids[slots], slots)
        self.cindex = IdIndex(int(self.c_used.sum()))
        cpos = np.flatnonzero(self.c_used)
        self.cindex.put_new(self.c_ids[cpos], cpos)


def totals_for(ids: Ids, miss: Ints, totals: Ints, rest: Ints) -> Ints:
    """The totals (indexed like `miss`) of the ids at positions `rest` (indexed like `ids`)."""
    where = np.searchsorted(miss, rest)
    return totals[where]
