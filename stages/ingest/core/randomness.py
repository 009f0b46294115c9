"""Counter-based random numbers for the synthetic generator (pure NumPy, deterministic).

Every value is a hash (splitmix64) of a key derived from (seed, position, stream), so any
element can be computed on its own, in any order and any chunking, with the same result.
The integer part is exact everywhere; values that go through float functions (pow, log, exp,
cos) are reproducible for one NumPy build on one CPU family (NumPy picks SIMD kernels by CPU).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from stages.common.hashing import splitmix64

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
M32 = np.uint64(0xFFFFFFFF)
M16 = np.uint64(0xFFFF)
SQRT3 = math.sqrt(3.0)


def mix(keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """64 random-looking bits per key (splitmix64 of key + golden gamma, wrapping)."""
    with np.errstate(over="ignore"):
        return splitmix64(keys + _GAMMA)


def uniform(bits: npt.NDArray[np.uint64], scale: float) -> npt.NDArray[np.float64]:
    """Integers in [0, scale) -> floats in (0, 1)."""
    return (bits.astype(np.float64) + 0.5) / scale


def ordered_dot(
    x: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """x @ weights, summed column by column in a fixed order.

    BLAS picks kernels by shape, so its rounding would depend on the chunk size, and a label near
    its threshold could change with how a range is split.
    """
    total = x[:, 0] * weights[0]
    for j in range(1, weights.shape[0]):
        total += x[:, j] * weights[j]
    return total


def signed_unit(bits: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    """16-bit integers -> uniform floats in (-sqrt(3), sqrt(3)): mean 0, variance 1."""
    return bits.astype(np.float64) * (2 * SQRT3 / 65536.0) + (SQRT3 / 65536.0 - SQRT3)


def fixed_uniforms(seed: int, stream: int, n: int) -> npt.NDArray[np.float64]:
    """n uniforms in (0, 1) that depend only on (seed, stream): per-config constants."""
    keys = np.uint64((seed * 1024 + stream * 64) % 2**64)
    with np.errstate(over="ignore"):
        return uniform(mix(keys + np.arange(n, dtype=np.uint64)) & M32, 2.0**32)


def zipf_ranks(
    u: npt.NDArray[np.float64], card: npt.NDArray[np.float64], s: float
) -> npt.NDArray[np.uint64]:
    """Inverse CDF of the continuous bounded power law on [1, N+1), floored: ranks in 1..N."""
    if abs(s - 1.0) < 1e-9:
        ranks = np.power(card + 1, u)
    else:
        top = np.power(card + 1, 1 - s) - 1
        ranks = np.power(1 + u * top, 1 / (1 - s))
    return np.minimum(np.floor(ranks), card).astype(np.uint64)
