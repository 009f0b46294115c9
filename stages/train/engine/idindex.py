"""A vectorised open-addressing hash map uint64 id -> int64 value, in NumPy.

Why not a Python dict: a mini-batch of 4,096 Criteo rows has ~20k distinct ids; a dict costs
~10 ms of interpreter time for them, a third of the step. Why not `tf.lookup` tables: the
admission and eviction bookkeeping around the map (counters, ages, free slots) is vectorised
NumPy anyway, and a NumPy map keeps the whole table logic in one place, testable without
TensorFlow (see `stages/train/engine/__init__.py` for the measurements).

Linear probing over a power-of-two array with Fibonacci hashing of the id (ids are already
uniform, but a shard holds only ids with `id % size == rank`, so their low bits are constant and
must not be used as the home position). Deletion leaves tombstones; the map rehashes itself when
live entries plus tombstones pass half of the array. Every operation works on a whole array of
ids at once: one NumPy pass per probe round, a handful of rounds at load <= 1/2.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_FIB = np.uint64(0x9E3779B97F4A7C15)
_EMPTY, _USED, _DELETED = np.uint8(0), np.uint8(1), np.uint8(2)

Ids = npt.NDArray[np.uint64]
Ints = npt.NDArray[np.int64]


class IdIndex:
    """A map from unique uint64 ids to int64 values (the caller's slot numbers).

    Contract: `get` returns -1 for an absent id; `put_new` requires ids that are unique and
    absent (the caller looks them up first), it does not check; `delete` ignores absent ids.
    """

    def __init__(self, expected: int = 1024) -> None:
        self._alloc(max(16, 1 << int(2 * max(expected, 8) - 1).bit_length()))
        self._used = 0

    def _alloc(self, cap: int) -> None:
        self._cap = cap
        self._shift = np.uint64(64 - (cap.bit_length() - 1))
        self._keys = np.zeros(cap, np.uint64)
        self._vals = np.full(cap, -1, np.int64)
        self._state = np.zeros(cap, np.uint8)
        self._claim = np.zeros(cap, np.int64)  # scratch for put_new
        self._deleted = 0

    def __len__(self) -> int:
        return self._used

    def _home(self, ids: Ids) -> Ints:
        with np.errstate(over="ignore"):
            return ((ids * _FIB) >> self._shift).astype(np.int64)

    def _find(self, ids: Ids) -> Ints:
        """Array positions of `ids`, -1 where absent."""
        ids = np.asarray(ids, dtype=np.uint64)
        out = np.full(ids.shape[0], -1, np.int64)
        pos = self._home(ids)
        active = np.arange(ids.shape[0])
        keys = ids
        mask = self._cap - 1
        while active.size:
            state = np.take(self._state, pos)
            hit = np.take(self._keys, pos) == keys
            hit &= state == _USED
            out[active[hit]] = pos[hit]
            keep = ~hit
            keep &= state != _EMPTY
            # Work on the unresolved ids only: every round touches fewer of them.
            active, keys = active[keep], keys[keep]
            pos = (pos[keep] + 1) & mask
        return out

    def get(self, ids: Ids) -> Ints:
        """Values of `ids` (1-D), -1 where absent."""
        pos = self._find(ids)
        out = np.take(self._vals, pos)  # pos -1 reads the last cell: overwritten below
        out[pos < 0] = -1
        return out

    def put_new(self, ids: Ids, values: Ints) -> None:
        """Insert unique, absent `ids` with `values`."""
        ids = np.asarray(ids, dtype=np.uint64)
        if ids.size == 0:
            return
        if 2 * (self._used + self._deleted + ids.size) > self._cap:
            self._rehash(self._used + ids.size)
        values = np.asarray(values, dtype=np.int64)
        pos = self._home(ids)
        pending = np.arange(ids.shape[0])
        mask = self._cap - 1
        while pending.size:
            free = np.take(self._state, pos) != _USED
            cand, cpos = pending[free], pos[free]
            # Several pending ids may probe the same free cell: exactly one of them takes it
            # (whichever write lands last in `_claim`; which one does not matter).
            self._claim[cpos] = cand
            won = np.take(self._claim, cpos) == cand
            wpos, win = cpos[won], cand[won]
            self._deleted -= int(np.count_nonzero(np.take(self._state, wpos) == _DELETED))
            self._keys[wpos] = ids[win]
            self._vals[wpos] = values[win]
            self._state[wpos] = _USED
            lost = np.ones(pending.shape[0], np.bool_)
            lost[np.flatnonzero(free)[won]] = False
            pending = pending[lost]
            pos = (pos[lost] + 1) & mask
        self._used += ids.size

    def delete(self, ids: Ids) -> None:
        """Remove `ids` (absent ones are ignored)."""
        pos = self._find(ids)
        pos = np.unique(pos[pos >= 0])
        self._state[pos] = _DELETED
        self._vals[pos] = -1
        self._used -= pos.size
        self._deleted += pos.size

    def items(self) -> tuple[Ids, Ints]:
        """All (ids, values), in array order."""
        used = self._state == _USED
        return self._keys[used].copy(), self._vals[used].copy()

    def _rehash(self, live: int) -> None:
        keys, vals = self.items()
        # Load 1/4 right after a rehash: room to grow before the next one.
        cap = max(16, 1 << max(4 * live - 1, 1).bit_length())
        self._alloc(cap)
        self._used = 0
        self.put_new(keys, vals)
