"""Running statistics per field of the feature schema, for monitoring (drift, missing rates, id
cardinality).

They do NOT feed the transform (`layout.Transform`, stateless) nor admission (decided by the
trainer's embedding table). Stored in the `stats` hash (keys.py), one JSON value per field named
as in the schema, written together with `stats:version` in one transaction; every value carries
that version:

    <label>        {"v":1,"version":7,"rows":N,"clicks":K,"ctr":K/N}
    <dense field>  {"v":1,"version":7,"count":non-missing,"missing":M,"sum":S,"min":a,"max":b,
                    "mean":S/count}     raw values (before any transform; bucketized fields too);
                                        min/max/mean null if count=0
    <categorical>  {"v":1,"version":7,"count":non-missing,"missing":M,"distinct":estimate,
                    "hll_p":12,"hll":base64(uint8[4096])}
    <multi field>  the same, with count/missing = events with at least one value / with none,
                   "values": the values kept (at most max_len per event)

`distinct` counts distinct feature ids with a HyperLogLog (p=12, about 1.6% standard error)
whose registers are kept so snapshots merge: for a categorical field every id (the missing id
included), for a multi field the ids of the values present (padding excluded).

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

from stages.common.layout import Layout
from stages.common.raw import RawColumns
from stages.common.schema import FeatureSchema

STATS_SCHEMA_VERSION = 1
HLL_P = 12
_M = 1 << HLL_P
_LOW_BITS = 64 - HLL_P
_LOW_MASK = np.uint64((1 << _LOW_BITS) - 1)


@dataclass(frozen=True)
class MultiSlots:
    """A multi field's name and its id slots [first, first + n_slots)."""

    name: str
    first: int
    n_slots: int


@dataclass(frozen=True)
class StatsFields:
    """The fields a schema has statistics for: its label, its dense fields (every declared one,
    order kept), its categorical fields (id slots 0..C-1, the layout's first ones) and its multi
    fields."""

    label: str
    dense: tuple[str, ...]
    categorical: tuple[str, ...]
    multi: tuple[MultiSlots, ...] = ()

    @staticmethod
    def of(schema: FeatureSchema, layout: Layout) -> StatsFields:
        """The statistics fields of `schema` compiled to `layout`."""
        groups = {g.name: g for g in layout.groups}
        return StatsFields(
            label=schema.label.name,
            dense=tuple(f.name for f in schema.dense),
            categorical=tuple(f.name for f in schema.categorical),
            multi=tuple(
                MultiSlots(f.name, groups[f.name].first, groups[f.name].n_slots)
                for f in schema.multi
            ),
        )

    @property
    def sketched(self) -> tuple[str, ...]:
        """The fields with a distinct-count sketch: the categorical ones, then the multi ones."""
        return (*self.categorical, *(m.name for m in self.multi))


@dataclass(frozen=True)
class FieldStats:
    """Statistics of some rows of one schema, mergeable. Arrays are per field: D dense fields,
    F = categorical + multi fields (`fields.sketched`)."""

    fields: StatsFields
    rows: int
    clicks: int
    dense_count: npt.NDArray[np.int64]
    dense_missing: npt.NDArray[np.int64]
    dense_sum: npt.NDArray[np.float64]
    dense_min: npt.NDArray[np.float64]  # +inf where count is 0
    dense_max: npt.NDArray[np.float64]  # -inf where count is 0
    cat_count: npt.NDArray[np.int64]  # [F] events with a value
    cat_missing: npt.NDArray[np.int64]  # [F] events without
    hll: npt.NDArray[np.uint8]  # [F, 4096] HyperLogLog registers of the feature ids
    multi_values: npt.NDArray[np.int64]  # [multi fields] values kept

    @staticmethod
    def empty(fields: StatsFields) -> FieldStats:
        """Statistics of no rows (the identity of `merge`)."""
        d, f = len(fields.dense), len(fields.sketched)
        return FieldStats(
            fields,
            0,
            0,
            np.zeros(d, np.int64),
            np.zeros(d, np.int64),
            np.zeros(d, np.float64),
            np.full(d, np.inf),
            np.full(d, -np.inf),
            np.zeros(f, np.int64),
            np.zeros(f, np.int64),
            np.zeros((f, _M), np.uint8),
            np.zeros(len(fields.multi), np.int64),
        )

    @staticmethod
    def of(fields: StatsFields, raw: RawColumns, ids: npt.NDArray[np.uint64]) -> FieldStats:
        """Statistics of the rows of `raw`; `ids` uint64[n, S] are their feature ids."""
        dense = raw.dense
        present = ~np.isnan(dense)
        n_cat = len(fields.categorical)
        cat_count = (~raw.cat_missing).sum(axis=0).astype(np.int64)
        cat_missing = raw.cat_missing.sum(axis=0).astype(np.int64)
        hll = hll_registers(ids[:, :n_cat])
        multi_values = np.zeros(len(fields.multi), np.int64)
        if fields.multi:
            lengths = np.minimum(raw.multi_len, [m.n_slots for m in fields.multi])
            has = lengths > 0
            cat_count = np.concatenate([cat_count, has.sum(axis=0).astype(np.int64)])
            cat_missing = np.concatenate([cat_missing, (~has).sum(axis=0).astype(np.int64)])
            multi_values = lengths.sum(axis=0).astype(np.int64)
            sketches = [hll]
            for k, m in enumerate(fields.multi):
                kept = np.arange(m.n_slots)[None, :] < lengths[:, k : k + 1]
                values = ids[:, m.first : m.first + m.n_slots][kept]
                sketches.append(hll_registers(values.reshape(-1, 1)))
            hll = np.concatenate(sketches)
        return FieldStats(
            fields=fields,
            rows=len(raw),
            clicks=int(raw.label.sum()),
            dense_count=present.sum(axis=0).astype(np.int64),
            dense_missing=(~present).sum(axis=0).astype(np.int64),
            dense_sum=np.nansum(dense, axis=0),
            dense_min=np.where(present, dense, np.inf).min(axis=0, initial=np.inf),
            dense_max=np.where(present, dense, -np.inf).max(axis=0, initial=-np.inf),
            cat_count=cat_count,
            cat_missing=cat_missing,
            hll=hll,
            multi_values=multi_values,
        )

    def merge(self, other: FieldStats) -> FieldStats:
        """Statistics of the rows of both (commutative and associative); ValueError when they
        are of other fields (another schema)."""
        if other.fields != self.fields:
            raise ValueError("cannot merge the statistics of two different feature schemas")
        return FieldStats(
            self.fields,
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
            self.multi_values + other.multi_values,
        )

    def distinct(self) -> npt.NDArray[np.float64]:
        """Estimated distinct feature ids per sketched field (HyperLogLog)."""
        return np.asarray([hll_estimate(self.hll[j]) for j in range(self.hll.shape[0])])

    def to_hash(self, version: int) -> dict[str, bytes]:
        """The `stats` hash fields (see the module docstring) for snapshot `version`."""
        fields = self.fields
        out: dict[str, Any] = {
            fields.label: {
                "rows": self.rows,
                "clicks": self.clicks,
                "ctr": self.clicks / self.rows if self.rows else None,
            }
        }
        for j, name in enumerate(fields.dense):
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
        n_cat = len(fields.categorical)
        for j, name in enumerate(fields.sketched):
            out[name] = {
                "count": int(self.cat_count[j]),
                "missing": int(self.cat_missing[j]),
                "distinct": round(float(distinct[j])),
                "hll_p": HLL_P,
                "hll": base64.b64encode(self.hll[j].tobytes()).decode("ascii"),
            }
            if j >= n_cat:
                out[name]["values"] = int(self.multi_values[j - n_cat])
        return {
            name: json.dumps(
                {"v": STATS_SCHEMA_VERSION, "version": version, **value}, separators=(",", ":")
            ).encode()
            for name, value in out.items()
        }

    @staticmethod
    def from_hash(stored: dict[bytes, bytes], fields: StatsFields) -> FieldStats:
        """Parse a `stats` hash of the schema of `fields`; an empty hash gives `empty(fields)`.
        ValueError on a bad value or a hash of other fields (another schema)."""
        if not stored:
            return FieldStats.empty(fields)
        try:
            values = {k.decode(): json.loads(v) for k, v in stored.items()}
            if any(v.get("v") != STATS_SCHEMA_VERSION for v in values.values()):
                raise ValueError(f"statistics schema version is not {STATS_SCHEMA_VERSION}")
            dense = [values[name] for name in fields.dense]
            cats = [values[name] for name in fields.sketched]
            hll = np.stack(
                [np.frombuffer(base64.b64decode(c["hll"]), dtype=np.uint8) for c in cats]
            ) if cats else np.zeros((0, _M), np.uint8)
            if hll.shape != (len(cats), _M):
                raise ValueError(f"HyperLogLog registers have shape {hll.shape}")
            n_cat = len(fields.categorical)
            return FieldStats(
                fields=fields,
                rows=int(values[fields.label]["rows"]),
                clicks=int(values[fields.label]["clicks"]),
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
                multi_values=np.asarray([c["values"] for c in cats[n_cat:]], np.int64),
            )
        except KeyError as exc:
            raise ValueError(
                f"malformed statistics hash: no field {exc} (statistics of another feature "
                "schema? delete the `stats` key of this namespace)"
            ) from None
        except (TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
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
