"""Running statistics per field, for monitoring (drift, missing rates, id cardinality).

They do NOT feed the transform (which is stateless, see `transform.py`) nor admission (decided
by the trainer's embedding table). Stored in the `stats` hash (keys.py), one JSON value per field,
written together with `stats:version` in one transaction; every value carries that version:

    "label": {"v":1,"version":7,"rows":N,"clicks":K,"ctr":K/N}
    "I1".."I13": {"v":1,"version":7,"count":non-missing,"missing":M,"sum":S,"min":a,"max":b,
                  "mean":S/count}            raw values (before log1p); min/max/mean null if count=0
    "C1".."C26": {"v":1,"version":7,"count":non-missing,"missing":M,"distinct":estimate,
                  "hll_p":12,"hll":base64(uint8[4096])}
                 `distinct` counts distinct feature ids (missing included) with a HyperLogLog
                 (p=12, about 1.6% standard error) whose registers are kept so snapshots merge.

Counting is at most once: the rows a worker stored since its last snapshot are lost from the
statistics if it crashes before the next one (samples themselves are exactly once).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stages.common.criteo import CAT_NAMES, DENSE_NAMES, N_CATS, N_DENSE, RawBatch

STATS_SCHEMA_VERSION = 1
HLL_P = 12
_M = 1 << HLL_P
_LOW_BITS = 64 - HLL_P
_LOW_MASK = np.uint64((1 << _LOW_BITS) - 1)


@dataclass(frozen=True)
class FieldStats:
    """Statistics of some rows, mergeable. Arrays are per field (13 dense, 26 categorical)."""

    rows: int
    clicks: int
    dense_count: npt.NDArray[np.int64]
    dense_missing: npt.NDArray[np.int64]
    dense_sum: npt.NDArray[np.float64]
    dense_min: npt.NDArray[np.float64]  # +inf where count is 0
    dense_max: npt.NDArray[np.float64]  # -inf where count is 0
    cat_count: npt.NDArray[np.int64]
    cat_missing: npt.NDArray[np.int64]
    hll: npt.NDArray[np.uint8]  # [26, 4096] HyperLogLog registers of the feature ids

    @staticmethod
    def empty() -> FieldStats:
        """Statistics of no rows (the identity of `merge`)."""
        return FieldStats(
            0,
            0,
            np.zeros(N_DENSE, np.int64),
            np.zeros(N_DENSE, np.int64),
            np.zeros(N_DENSE, np.float64),
            np.full(N_DENSE, np.inf),
            np.full(N_DENSE, -np.inf),
            np.zeros(N_CATS, np.int64),
            np.zeros(N_CATS, np.int64),
            np.zeros((N_CATS, _M), np.uint8),
        )

    @staticmethod
    def of(raw: RawBatch, ids: npt.NDArray[np.uint64]) -> FieldStats:
        """Statistics of the rows of `raw`; `ids` uint64[n, 26] are their feature ids."""
        dense = raw.dense
        present = ~np.isnan(dense)
        return FieldStats(
            rows=len(raw),
            clicks=int(raw.label.sum()),
            dense_count=present.sum(axis=0).astype(np.int64),
            dense_missing=(~present).sum(axis=0).astype(np.int64),
            dense_sum=np.nansum(dense, axis=0),
            dense_min=np.where(present, dense, np.inf).min(axis=0, initial=np.inf),
            dense_max=np.where(present, dense, -np.inf).max(axis=0, initial=-np.inf),
            cat_count=(~raw.cat_missing).sum(axis=0).astype(np.int64),
            cat_missing=raw.cat_missing.sum(axis=0).astype(np.int64),
            hll=hll_registers(ids),
        )

    def merge(self, other: FieldStats) -> FieldStats:
        """Statistics of the rows of both (commutative and associative)."""
        return FieldStats(
            self.rows + other.rows,
            self.clicks + other.clicks,
            self.dense_count + other.dense_count,
            self.dense_missing + other.dense_missing,
            self.dense_sum + other.dense_sum,
            np.minimum(self.dense_min, other.dense_min),
            np.maximum(self.dense_max, other.dense_max),
            self.cat_count + other.cat_count,
            self.cat_missing + other.cat_missing,
            np.maximum(self.hll, other.hll),
        )

    def distinct(self) -> npt.NDArray[np.float64]:
        """Estimated distinct feature ids per categorical field (HyperLogLog)."""
        return np.asarray([hll_estimate(self.hll[j]) for j in range(N_CATS)])

    def to_hash(self, version: int) -> dict[str, bytes]:
        """The `stats` hash fields (see the module docstring) for snapshot `version`."""
        out: dict[str, Any] = {
            "label": {
                "rows": self.rows,
                "clicks": self.clicks,
                "ctr": self.clicks / self.rows if self.rows else None,
            }
        }
        for j, name in enumerate(DENSE_NAMES):
            count = int(self.dense_count[j])
            out[name] = {
                "count": count,
                "missing": int(self.dense_missing[j]),
                "sum": float(self.dense_sum[j]),
                "min": float(self.dense_min[j]) if count else None,
                "max": float(self.dense_max[j]) if count else None,
                "mean": float(self.dense_sum[j]) / count if count else None,
            }
        distinct = self.distinct()
        for j, name in enumerate(CAT_NAMES):
            out[name] = {
                "count": int(self.cat_count[j]),
                "missing": int(self.cat_missing[j]),
                "distinct": round(float(distinct[j])),
                "hll_p": HLL_P,
                "hll": base64.b64encode(self.hll[j].tobytes()).decode("ascii"),
            }
        return {
            name: json.dumps(
                {"v": STATS_SCHEMA_VERSION, "version": version, **value}, separators=(",", ":")
            ).encode()
            for name, value in out.items()
        }

    @staticmethod
    def from_hash(fields: dict[bytes, bytes]) -> FieldStats:
        """Parse a `stats` hash; an empty hash gives `empty()`. ValueError on a bad value."""
        if not fields:
            return FieldStats.empty()
        try:
            values = {k.decode(): json.loads(v) for k, v in fields.items()}
            if any(v.get("v") != STATS_SCHEMA_VERSION for v in values.values()):
                raise ValueError(f"statistics schema version is not {STATS_SCHEMA_VERSION}")
            dense = [values[name] for name in DENSE_NAMES]
            cats = [values[name] for name in CAT_NAMES]
            hll = np.stack(
                [np.frombuffer(base64.b64decode(c["hll"]), dtype=np.uint8) for c in cats]
            )
            if hll.shape != (N_CATS, _M):
                raise ValueError(f"HyperLogLog registers have shape {hll.shape}")
            return FieldStats(
                rows=int(values["label"]["rows"]),
                clicks=int(values["label"]["clicks"]),
                dense_count=np.asarray([d["count"] for d in dense], np.int64),
                dense_missing=np.asarray([d["missing"] for d in dense], np.int64),
                dense_sum=np.asarray([d["sum"] for d in dense], np.float64),
                dense_min=np.asarray(
                    [np.inf if d["min"] is None else d["min"] for d in dense], np.float64
                ),
                dense_max=np.asarray(
                    [-np.inf if d["max"] is None else d["max"] for d in dense], np.float64
                ),
                cat_count=np.asarray([c["count"] for c in cats], np.int64),
                cat_missing=np.asarray([c["missing"] for c in cats], np.int64),
                hll=hll.copy(),
            )
        except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed statistics hash: {exc!r}") from None


def hll_registers(ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """uint64[n, F] ids -> uint8[F, 4096] HyperLogLog registers, one row per field.

    Feature ids are splitmix64 outputs (uniform bits), so they serve as the hash directly:
    the top 12 bits pick the register, the rank is 1 + trailing zeros of the other 52 bits.
    """
    n, fields = ids.shape
    out = np.zeros((fields, _M), np.uint8)
    if n == 0:
        return out
    index = (ids >> np.uint64(_LOW_BITS)).astype(np.int64)
    low = ids & _LOW_MASK
    lowest = low & (~low + np.uint64(1))
    # A power of two converts to float64 exactly, so log2 is exact; low == 0 gets the top rank.
    lowest[low == 0] = np.uint64(1) << np.uint64(_LOW_BITS)
    rank = np.log2(lowest.astype(np.float64)) + 1
    flat = (index + np.arange(fields, dtype=np.int64) * _M).ravel()
    ranks = rank.astype(np.uint8).ravel()
    # Max per register without ufunc.at (slow): assign rank values in ascending order, so the
    # last (largest) write wins; ranks take only a few dozen distinct values.
    registers = out.reshape(-1)
    for value in np.unique(ranks):
        registers[flat[ranks == value]] = value
    return out


def hll_estimate(registers: npt.NDArray[np.uint8]) -> float:
    """The HyperLogLog cardinality estimate of one register array (with the small-range fix)."""
    m = registers.shape[0]
    alpha = 0.7213 / (1 + 1.079 / m)
    estimate = alpha * m * m / float(np.sum(np.ldexp(1.0, -registers.astype(np.int64))))
    zeros = int(np.count_nonzero(registers == 0))
    if estimate <= 2.5 * m and zeros:
        return m * math.log(m / zeros)
    return estimate
