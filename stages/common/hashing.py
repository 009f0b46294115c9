"""Stable 64-bit feature ids for (field, value) pairs. NEVER change this for a model's lifetime.

The id of a hex value in table f (0-based: its slot's table, `layout.Layout.slot_tables`) is
`splitmix64(key)` with

    key = (f + 1) << 33 | value            a present value (value: the hex digits, < 2**32)
    key = (f + 1) << 33 | 1 << 32          the value is missing
    key = (f + 1) << 33 | 1 << 32 | 1      the table's fallback (an id not admitted yet)

(`layout.py` hashes the other value kinds and crosses into the same tables.)

splitmix64's finaliser is a bijection on 64-bit integers, so two different keys never share an
id: there are no collisions at all, across fields or values, and the ids are uniform, so
`id % n_shards` balances shards. The function is pure integer arithmetic (no Python `hash`, no
seed), so every process, host and release computes the same id. `HASH_VERSION` is recorded in
every exported model; a model trained with one version must never be served with another.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

HASH_VERSION = 1
_MISSING_BIT = np.uint64(1 << 32)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


def splitmix64(keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The splitmix64 finaliser, element-wise, with 64-bit wrap-around."""
    z = keys.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def _field_base(n_fields: int) -> npt.NDArray[np.uint64]:
    return (np.arange(1, n_fields + 1, dtype=np.uint64) << np.uint64(33)).astype(np.uint64)


def feature_ids(
    values: npt.NDArray[np.uint32], missing: npt.NDArray[np.bool_]
) -> npt.NDArray[np.uint64]:
    """uint32[n, F] values and bool[n, F] missing flags -> uint64[n, F] feature ids.

    Column j is table j. A missing cell gets the table's "missing" id whatever its value.
    """
    keys = values.astype(np.uint64) | _field_base(values.shape[1])
    keys = np.where(missing, _field_base(values.shape[1]) | _MISSING_BIT, keys)
    return splitmix64(keys.astype(np.uint64))


def fallback_ids(n_fields: int) -> npt.NDArray[np.uint64]:
    """uint64[F]: per table 0..F-1, the id used in place of a feature id not admitted."""
    return splitmix64(_field_base(n_fields) | _MISSING_BIT | np.uint64(1))


def feature_id(field: int, value: int | None) -> int:
    """Scalar form of `feature_ids` (value None = missing). For tests and debugging."""
    base = (field + 1) << 33
    key = base | (1 << 32) if value is None else base | (value & 0xFFFFFFFF)
    z = key & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)
