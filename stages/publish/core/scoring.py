"""Serving's forward pass: `reference_model`'s model, with the per-version work done once, in
float32.

`reference_model.predict` looks each id up with three binary searches over the sorted table ids
and computes in float64, converting every dense weight on every call. A `Scorer` is built once
per loaded version: an `IdIndex` (an open-addressing hash table over the table ids, linear
probing) and the dense weights in float32. It gathers the same rows (an absent id: its slot's
fallback row; an absent fallback: zeros) and calls `reference_model.logits` in float32, the
precision the trainer's TensorFlow model computes in: the probabilities differ from the float64
reference by under 1e-7 (measured, Wide&Deep and DCN, d=16, MLP 128-64; bounded at 1e-6 by
`tests/unit/publish/test_scoring.py`).

Measured on the bench model (Wide&Deep, d=16, MLP 128-64, 200,000 table rows), per 1,000-row
call on the 2-core machine at load 2-3: the lookup 3.4 ms (binary searches) -> 0.5 ms (no id
in the table) to 1.0 ms (86 % in it); building the index 27 ms, once per version. The forward
pass in float32 instead of float64: see bench/RESULTS-serving.md, "Session 6".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stages.common.model_export import ModelExport
from stages.common.reference_model import logits

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the high bits of id * this
_EMPTY = -1


@dataclass(frozen=True)
class IdIndex:
    """Positions of the table ids: `slots` int[2**bits] (int32 below 2**31 ids) holds a
    position in `ids` or -1.
    An id is looked for at its home slot (`_home`) and the slots after it (wrapping) until it
    or an empty slot is found; the table is at most a quarter full, so probes are few (about
    1.4 for an absent id; measured, a half-full table made lookups of absent ids 1.5x
    slower)."""

    ids: npt.NDArray[np.uint64]
    slots: npt.NDArray[Any]  # int32 or int64
    shift: np.uint64

    @staticmethod
    def build(ids: npt.NDArray[np.uint64]) -> IdIndex:
        """The index of distinct `ids` (any order)."""
        bits = max(int(4 * max(len(ids), 1) - 1).bit_length(), 4)  # 2**bits >= 4 * len
        shift = np.uint64(64 - bits)
        wide = np.int32 if len(ids) < 2**31 else np.int64
        slots = np.full(1 << bits, _EMPTY, dtype=wide)
        mask = (1 << bits) - 1
        pending = np.arange(len(ids), dtype=wide)
        at = _home(ids, shift)
        while len(pending):
            free = slots[at] == _EMPTY
            # of the pending ids whose slot is free, the first per slot takes it
            _, first = np.unique(at[free], return_index=True)
            won = np.flatnonzero(free)[first]
            slots[at[won]] = pending[won]
            lost = np.ones(len(pending), dtype=np.bool_)
            lost[won] = False
            pending, at = pending[lost], (at[lost] + 1) & mask
        return IdIndex(ids, slots, shift)

    def find(self, wanted: npt.NDArray[np.uint64]) -> npt.NDArray[Any]:
        """Positions in `ids` of `wanted` (any shape); -1 where absent."""
        flat = wanted.reshape(-1)
        if len(self.ids) == 0:
            return np.full(wanted.shape, _EMPTY, dtype=np.int64)
        mask = len(self.slots) - 1
        at = _home(flat, self.shift)
        out = np.take(self.slots, at)  # the first probe, over every id (most end there)
        miss = np.take(self.ids, np.maximum(out, 0)) != flat
        go_on = miss & (out != _EMPTY)
        out[miss] = _EMPTY
        todo = np.flatnonzero(go_on)
        at = (at[todo] + 1) & mask
        while len(todo):
            pos = np.take(self.slots, at)
            hit = (pos != _EMPTY) & (np.take(self.ids, np.maximum(pos, 0)) == flat[todo])
            out[todo[hit]] = pos[hit]
            go_on = (pos != _EMPTY) & ~hit
            todo, at = todo[go_on], (at[go_on] + 1) & mask
        return out.reshape(wanted.shape)


def _home(ids: npt.NDArray[np.uint64], shift: np.uint64) -> npt.NDArray[np.int64]:
    with np.errstate(over="ignore"):
        return ((ids * _GOLDEN) >> shift).astype(np.int64)


class Scorer:
    """Click probabilities of a full export, as `reference_model.predict` gives them."""

    def __init__(self, model: ModelExport) -> None:
        self.model = model
        self.spec = model.spec
        self.index = IdIndex.build(model.ids)
        self.fallback = self.spec.fallback_ids()
        self.fallback_pos = self.index.find(self.fallback)
        # float32 once here: `logits` then converts nothing per call
        self.weights: dict[str, npt.NDArray[Any]] = {
            k: np.asarray(v, dtype=np.float32) for k, v in model.dense.items()}

    def lookup(self, ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.float32]:
        """float32[n, F, w]: `reference_model.lookup_rows` of the export's table."""
        width = self.model.rows.shape[1]
        if len(self.model.ids) == 0:
            return np.zeros((*ids.shape, width), dtype=np.float32)
        pos = self.index.find(ids)
        pos = np.where(pos >= 0, pos, self.fallback_pos[None, :])
        absent = pos < 0
        if absent.all():
            return np.zeros((*ids.shape, width), dtype=np.float32)
        out = np.take(self.model.rows, np.maximum(pos, 0), axis=0)  # a copy
        if absent.any():
            out[absent] = 0.0
        return np.asarray(out, dtype=np.float32)

    def predict(self, x: npt.NDArray[np.float32], ids: npt.NDArray[np.uint64]
                ) -> npt.NDArray[np.float64]:
        """float64[n] probabilities for dense inputs float32[n, D] and ids uint64[n, F]."""
        rows = self.lookup(ids)
        weights = None if self.spec.simple else self.spec.slot_weights(ids)
        z = logits(self.spec, self.weights, rows, x, weights, dtype=np.float32)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float64)
