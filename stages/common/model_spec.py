"""The model spec: what the network looks like and on which input layout. Fixed for a model's
lifetime; written into every export's manifest (`model_export.py`) and checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from stages.common.hashing import HASH_VERSION, splitmix64
from stages.common.layout import Group, Layout, pooling_weights
from stages.common.transform import TRANSFORM_VERSION


@dataclass(frozen=True)
class ModelSpec:
    """What the network looks like. Fixed for a model's lifetime, validated at construction.

    The input layout comes from the feature schema (`layout.compile_layout`, `from_layout`):
    `n_dense` dense inputs (`standardize` marks those the model standardises by its running
    statistics), `n_fields` id slots hashed into `slot_tables`, embedded as `groups` (a group
    pools its slots; its `dim` may be below `embedding_dim`, the row width). Empty tuples mean
    the layout of the Criteo preset: one group per slot, tables 0..n_fields-1, nothing
    standardised (and every model exported before schemas existed). `schema_hash` names the
    feature schema ("" = made before schemas existed, i.e. Criteo's).
    """

    model_type: Literal["wide_deep", "dcn"]
    embedding_dim: int
    hidden_units: tuple[int, ...]
    cross_layers: int = 0
    n_dense: int = 13
    n_fields: int = 26
    hash_version: int = HASH_VERSION
    transform_version: int = TRANSFORM_VERSION
    slot_tables: tuple[int, ...] = ()
    groups: tuple[Group, ...] = ()
    standardize: tuple[bool, ...] = ()
    schema_hash: str = ""

    def __post_init__(self) -> None:
        if self.model_type not in ("wide_deep", "dcn"):
            raise ValueError(f"model_type must be wide_deep or dcn, got {self.model_type!r}")
        if not 1 <= self.embedding_dim <= 1024:
            raise ValueError(f"embedding_dim must be in 1..1024, got {self.embedding_dim}")
        if any(u < 1 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if self.model_type == "dcn" and self.cross_layers < 1:
            raise ValueError("a dcn model needs cross_layers >= 1")
        object.__setattr__(self, "hidden_units", tuple(int(u) for u in self.hidden_units))
        object.__setattr__(self, "groups", tuple(
            g if isinstance(g, Group) else Group(**g) for g in self.groups))
        if self.slot_tables and len(self.slot_tables) != self.n_fields:
            raise ValueError(f"slot_tables needs {self.n_fields} entries")
        if self.standardize and len(self.standardize) != self.n_dense:
            raise ValueError(f"standardize needs {self.n_dense} entries")
        covered = sum(g.n_slots for g in self.groups)
        if self.groups and covered != self.n_fields:
            raise ValueError(f"groups cover {covered} slots, the model has {self.n_fields}")
        if any(g.dim > self.embedding_dim for g in self.groups):
            raise ValueError("a group's dim is above embedding_dim (the row width)")

    @staticmethod
    def from_layout(
        layout: Layout,
        model_type: Literal["wide_deep", "dcn"],
        hidden_units: tuple[int, ...],
        cross_layers: int = 0,
    ) -> ModelSpec:
        """The spec of a model on `layout`; `embedding_dim` is the widest group's dim."""
        return ModelSpec(
            model_type=model_type,
            embedding_dim=max(g.dim for g in layout.groups),
            hidden_units=hidden_units,
            cross_layers=cross_layers,
            n_dense=layout.n_dense,
            n_fields=layout.n_slots,
            slot_tables=layout.slot_tables,
            groups=layout.groups,
            standardize=layout.standardize,
            schema_hash=layout.schema_hash,
        )

    @property
    def row_width(self) -> int:
        """Floats per embedding row: the deep vector, plus the wide (linear) weight for W&D."""
        return self.embedding_dim + (1 if self.model_type == "wide_deep" else 0)

    @property
    def input_groups(self) -> tuple[Group, ...]:
        """The groups, the Criteo layout's when none are declared."""
        if self.groups:
            return self.groups
        return tuple(Group(str(i), i, 1, "none", self.embedding_dim) for i in range(self.n_fields))

    @property
    def simple(self) -> bool:
        """One slot per group, every group deep at the full width, nothing standardised: the
        plain concatenation of all slots' rows (the fast path of every implementation)."""
        return all(g.n_slots == 1 and g.deep and g.dim == self.embedding_dim
                   for g in self.input_groups) and not any(self.standardize)

    @property
    def deep_width(self) -> int:
        """Width of the deep input x0: the deep groups' dims plus the dense inputs."""
        return sum(g.dim for g in self.input_groups if g.deep) + self.n_dense

    def fallback_ids(self) -> npt.NDArray[np.uint64]:
        """uint64[n_fields]: per slot, the id used for an id not admitted (its table's)."""
        tables = np.asarray(self.slot_tables or range(self.n_fields), np.uint64)
        return splitmix64(((tables + np.uint64(1)) << np.uint64(33)) | np.uint64((1 << 32) | 1))

    def same_model(self, other: ModelSpec) -> bool:
        """Whether both describe one network on one input layout. A spec written before
        schemas existed (empty layout fields, no schema hash) equals its Criteo layout spelled
        out, so versions and checkpoints from before schemas chain with new exports."""
        def norm(spec: ModelSpec) -> tuple[object, ...]:
            return (spec.model_type, spec.embedding_dim, spec.hidden_units, spec.cross_layers,
                    spec.n_dense, spec.n_fields, spec.hash_version, spec.transform_version,
                    tuple(spec.slot_tables or range(spec.n_fields)),
                    tuple((g.first, g.n_slots, g.pooling, g.dim, g.deep) for g in spec.input_groups),
                    tuple(spec.standardize) if any(spec.standardize) else ())
        hashes = {self.schema_hash, other.schema_hash} - {""}
        return norm(self) == norm(other) and len(hashes) <= 1

    def missing_ids(self) -> npt.NDArray[np.uint64]:
        """uint64[n_fields]: per slot, the id of a missing value (and of multi padding)."""
        tables = np.asarray(self.slot_tables or range(self.n_fields), np.uint64)
        return splitmix64(((tables + np.uint64(1)) << np.uint64(33)) | np.uint64(1 << 32))

    def slot_weights(self, ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.float32]:
        """float32[n, n_fields]: the pooling weight of every slot (`layout.pooling_weights`)."""
        return pooling_weights(self.input_groups, self.missing_ids(), ids)

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "hidden_units": list(self.hidden_units)}
        for key in ("slot_tables", "groups", "standardize", "schema_hash"):
            if not data[key]:
                del data[key]  # the Criteo layout: the manifest reads as before schemas
        if "groups" in data:
            data["groups"] = [asdict(g) for g in self.groups]
        return data

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ModelSpec:
        return ModelSpec(**{
            **data,
            "hidden_units": tuple(data["hidden_units"]),
            "slot_tables": tuple(data.get("slot_tables", ())),
            "groups": tuple(Group(**g) for g in data.get("groups", ())),
            "standardize": tuple(data.get("standardize", ())),
        })
