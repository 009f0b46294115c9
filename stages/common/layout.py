"""A feature schema compiled to model inputs: dense columns, id slots, and slot groups.

    dense inputs   the schema's dense fields without buckets, in order: float32[n, n_dense]
    id slots       uint64[n, n_slots], in this order:
                     one per categorical field, one per bucketized dense field,
                     max_len per multi field, one per cross
    groups         what the model embeds: one group per field or cross; a multi field's group
                   pools its slots (mean or sum over the values present)

Every slot hashes into a *table* (`slot_tables`): a field's own number in the order above, or,
with `share`, the number of the field it shares, so equal values give equal ids. Ids are made
by `hashing` and NEVER change for a model's lifetime:

    hex values     feature_ids: splitmix64((t + 1) << 33 | value), exactly the Criteo ids
    int/str        splitmix64(splitmix64(value) ^ (t + 1) * 0x9E3779B97F4A7C15)
    crosses        the same, on the component ids folded with splitmix64
    missing        splitmix64((t + 1) << 33 | 1 << 32) for every kind; also the padding of a
                   multi slot past the list's end, which weighs 0 in the pooling
    fallback       splitmix64((t + 1) << 33 | 1 << 32 | 1), the row of an id not admitted yet

For the Criteo preset the layout is 13 dense inputs and 26 single-slot groups, tables 0..25:
samples and ids are exactly what they were before schemas existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from stages.common.hashing import splitmix64
from stages.common.raw import RawColumns
from stages.common.schema import CategoricalField, DenseField, FeatureSchema

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MISSING_BIT = np.uint64(1 << 32)


@dataclass(frozen=True)
class Group:
    """What the model embeds: slots [first, first + n_slots), pooled; `deep`: part of the deep
    input (crosses are wide-only)."""

    name: str
    first: int
    n_slots: int
    pooling: Literal["none", "mean", "sum"]
    dim: int
    deep: bool = True


@dataclass(frozen=True)
class Layout:
    """The compiled schema (see the module docstring)."""

    schema_hash: str
    dense_names: tuple[str, ...]
    standardize: tuple[bool, ...]
    slot_tables: tuple[int, ...]
    slot_kinds: tuple[Literal["hex", "value", "cross"], ...]
    groups: tuple[Group, ...]
    cross_parts: tuple[tuple[int, ...], ...]  # per cross: the slots it combines

    @property
    def n_dense(self) -> int:
        return len(self.dense_names)

    @property
    def n_slots(self) -> int:
        return len(self.slot_tables)

    @property
    def pooled(self) -> bool:
        """Whether any group pools several slots (the model needs `slot_weights`)."""
        return any(g.pooling != "none" for g in self.groups)

    def table_keys(self) -> npt.NDArray[np.uint64]:
        """uint64[n_slots]: (table + 1) << 33 of every slot."""
        return (np.asarray(self.slot_tables, np.uint64) + np.uint64(1)) << np.uint64(33)

    def missing_ids(self) -> npt.NDArray[np.uint64]:
        """uint64[n_slots]: the id of a missing value (and of multi padding) per slot."""
        return splitmix64(self.table_keys() | _MISSING_BIT)

    def fallback_ids(self) -> npt.NDArray[np.uint64]:
        """uint64[n_slots]: the id used in place of an id that is not admitted, per slot."""
        return splitmix64(self.table_keys() | _MISSING_BIT | np.uint64(1))

    def slot_weights(self, ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.float32]:
        """float32[n, n_slots]: each slot's weight in its group's pooling (`pooling_weights`)."""
        return pooling_weights(self.groups, self.missing_ids(), ids)


def pooling_weights(
    groups: tuple[Group, ...], missing_ids: npt.NDArray[np.uint64], ids: npt.NDArray[np.uint64]
) -> npt.NDArray[np.float32]:
    """float32[n, slots]: 1 for a single-slot group; for a pooled group 1 (sum) or 1/count
    (mean) on the values present, 0 on padding (a slot holding its missing id)."""
    weights = np.ones(ids.shape, np.float32)
    for group in groups:
        if group.pooling == "none":
            continue
        cols = slice(group.first, group.first + group.n_slots)
        present = ids[:, cols] != missing_ids[cols][None, :]
        w = present.astype(np.float32)
        if group.pooling == "mean":
            w /= np.maximum(present.sum(axis=1, keepdims=True), 1).astype(np.float32)
        weights[:, cols] = w
    return weights


def compile_layout(schema: FeatureSchema, default_dim: int) -> Layout:
    """The layout of `schema`; `default_dim` is the model's embedding dimension, used by every
    field that declares none."""
    tables: dict[str, int] = {}
    slot_tables: list[int] = []
    kinds: list[Literal["hex", "value", "cross"]] = []
    groups: list[Group] = []
    owners: list[CategoricalField | DenseField] = [
        *schema.categorical, *(f for f in schema.dense if f.buckets), *schema.multi]
    for number, field in enumerate(owners):
        tables[field.name] = number
    for field in owners:
        share = getattr(field, "share", None)
        table = tables[share] if share else tables[field.name]
        n = getattr(field, "max_len", 1)
        pooling: Literal["none", "mean", "sum"] = getattr(field, "pooling", "none")
        first = len(slot_tables)
        slot_tables += [table] * n
        kinds += ["hex" if getattr(field, "type", "") == "hex" else "value"] * n
        groups.append(Group(field.name, first, n, pooling, field.dim or default_dim))
    cross_parts = []
    slot_of = {g.name: g.first for g in groups if g.n_slots == 1}
    for number, cross in enumerate(schema.crosses, start=len(owners)):
        cross_parts.append(tuple(slot_of[name] for name in cross.fields))
        groups.append(Group(cross.cross_name, len(slot_tables), 1, "none", default_dim, False))
        slot_tables.append(number)
        kinds.append("cross")
    plain = [f for f in schema.dense if not f.buckets]
    return Layout(
        schema_hash=schema.schema_hash,
        dense_names=tuple(f.name for f in plain),
        standardize=tuple(f.transform == "standardize" for f in plain),
        slot_tables=tuple(slot_tables),
        slot_kinds=tuple(kinds),
        groups=tuple(groups),
        cross_parts=tuple(cross_parts),
    )


class Transform:
    """Raw columns -> model inputs for one schema. Pure and stateless: the features stage, the
    trainer's replay, serving and evaluate compute exactly the same inputs. (Standardisation by
    running statistics happens inside the model, which keeps them with its weights.)"""

    def __init__(self, schema: FeatureSchema, layout: Layout) -> None:
        self.schema = schema
        self.layout = layout
        self._plain = [j for j, f in enumerate(schema.dense) if not f.buckets]
        self._bucketed = [j for j, f in enumerate(schema.dense) if f.buckets]
        plain = [schema.dense[j] for j in self._plain]
        self._low = np.asarray([f.clip[0] if f.clip else -np.inf for f in plain], np.float64)
        self._high = np.asarray([f.clip[1] if f.clip else np.inf for f in plain], np.float64)
        self._log1p = np.asarray([f.transform == "log1p" for f in plain], np.bool_)
        self._fill = np.asarray([f.missing for f in plain], np.float64)
        self._keys = layout.table_keys()
        self._missing = layout.missing_ids()
        self._hex = np.asarray([k == "hex" for k in layout.slot_kinds], np.bool_)

    def dense(self, raw: RawColumns) -> npt.NDArray[np.float32]:
        """float32[n, n_dense]: clip, transform, then the declared value where missing."""
        x = raw.dense[:, self._plain]
        x = np.clip(x, self._low, self._high)
        x = np.where(self._log1p, np.sign(x) * np.log1p(np.abs(x)), x)
        return np.where(np.isnan(x), self._fill, x).astype(np.float32)

    def ids(self, raw: RawColumns) -> npt.NDArray[np.uint64]:
        """uint64[n, n_slots]: the feature ids of every slot (admission NOT applied)."""
        layout = self.layout
        n = len(raw)
        out = np.empty((n, layout.n_slots), np.uint64)
        n_cat = len(self.schema.categorical)
        if n_cat:  # all categorical slots at once: they are the first ones
            out[:, :n_cat] = self._hash(slice(0, n_cat), raw.cat_values, raw.cat_missing)
        slot = n_cat
        for j in self._bucketed:
            x = raw.dense[:, j]
            bucket = np.searchsorted(np.asarray(self.schema.dense[j].buckets), x, side="right")
            out[:, slot] = self._hash(slot, bucket.astype(np.uint64), np.isnan(x))
            slot += 1
        start = 0
        for k, field in enumerate(self.schema.multi):
            length = raw.multi_len[:, k]
            for i in range(field.max_len):
                pad = length <= i
                out[:, slot] = self._hash(slot, raw.multi_values[:, start + i], pad)
                slot += 1
            start += field.max_len
        for parts in layout.cross_parts:
            h = np.zeros(n, np.uint64)
            for part in parts:
                h = splitmix64(h ^ out[:, part])
            out[:, slot] = self._hash(slot, h, np.zeros(n, np.bool_))
            slot += 1
        return out

    def _hash(
        self, slots: int | slice, values: npt.NDArray[np.uint64], missing: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.uint64]:
        """The ids of `values` in slot(s) `slots` (one column, or [n, k] for a slice)."""
        keys = self._keys[slots]
        hex_slots = self._hex[slots]
        with np.errstate(over="ignore"):
            if np.all(hex_slots):  # hashing.feature_ids: the Criteo ids
                hashed = splitmix64(values | keys)
            else:
                hashed = splitmix64(splitmix64(values) ^ (keys >> np.uint64(33)) * _GOLDEN)
                if np.any(hex_slots):
                    hashed = np.where(hex_slots, splitmix64(values | keys), hashed)
        return np.where(missing, self._missing[slots], hashed)
