"""Synthetic exports, records and raw rows with random weights, for tests and benchmarks, for
any feature schema.

They follow the export contract exactly (dense weight names and shapes of `reference_model`
for the spec's layout, full/delta semantics). Pure NumPy, seeded. `criteo_rows`, `vocab_ids`
and `full_export(spec)` without ids are the Criteo preset's (the layout of a spec without
groups).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from stages.common.export_meta import ExportMeta, ProgressiveMetrics, StoreRange
from stages.common.layout import Transform, compile_layout
from stages.common.model_export import ModelExport, ModelSpec
from stages.common.schema import FeatureSchema, load_schema
from stages.publish.core.records import records_to_raw

VOCAB = 50  # values per categorical field in synthetic rows
Record = dict[str, Any]


def dense_weights(spec: ModelSpec, rng: np.random.Generator) -> dict[str, npt.NDArray[np.float32]]:
    """Random dense weights with the canonical names and shapes of `spec`."""
    width = spec.deep_width
    out: dict[str, npt.NDArray[np.float32]] = {}
    fan_in = width
    for i, units in enumerate(spec.hidden_units):
        out[f"deep/{i}/kernel"] = rng.normal(0, fan_in**-0.5, (fan_in, units)).astype(np.float32)
        out[f"deep/{i}/bias"] = rng.normal(0, 0.01, units).astype(np.float32)
        fan_in = units
    if spec.model_type == "wide_deep":
        out["wide/kernel"] = rng.normal(0, 0.1, (spec.n_dense, 1)).astype(np.float32)
        out["wide/bias"] = np.array([-1.0], np.float32)
    else:
        for layer in range(spec.cross_layers):
            out[f"cross/{layer}/kernel"] = rng.normal(0, 0.01, (width, width)).astype(np.float32)
            out[f"cross/{layer}/bias"] = rng.normal(0, 0.01, width).astype(np.float32)
        fan_in += width
    out["head/kernel"] = rng.normal(0, fan_in**-0.5, (fan_in, 1)).astype(np.float32)
    out["head/bias"] = np.array([-1.0], np.float32)
    if any(spec.standardize):
        marked = np.asarray(spec.standardize)
        out["norm/mean"] = np.where(marked, rng.normal(0, 1, spec.n_dense), 0).astype(np.float32)
        out["norm/var"] = np.where(marked, rng.uniform(0.5, 2, spec.n_dense), 1).astype(np.float32)
    return out


def synthetic_records(schema: FeatureSchema, n: int, rng: np.random.Generator) -> list[Record]:
    """n random records keyed by field name over a small vocabulary (`VOCAB` values per field,
    a few more that no export holds); None where a value is missing."""

    def cat(kind: str) -> Any:
        value = int(rng.integers(0, VOCAB + 5))
        return f"{value:08x}" if kind == "hex" else value if kind == "int" else f"v{value}"

    out = []
    for _ in range(n):
        record: Record = {}
        for dense in schema.dense:
            if rng.random() < 0.1:
                record[dense.name] = None
            elif dense.type == "int":
                record[dense.name] = int(rng.integers(-3, 1000 if not dense.buckets else 24))
            else:
                record[dense.name] = round(float(rng.uniform(0, 100)), 2)
        for field in schema.categorical:
            record[field.name] = None if rng.random() < 0.05 else cat(field.type)
        for multi in schema.multi:
            length = int(rng.integers(0, multi.max_len + 3))
            record[multi.name] = [cat(multi.type) for _ in range(length)]
        out.append(record)
    return out


def schema_rows(schema: FeatureSchema, records: list[Record], labels: list[int] | None = None
                ) -> list[str]:
    """The records as raw rows in the schema's format (by position for tsv/csv; a JSON
    object by the fields' paths for jsonl): events with the labels (and event ids
    `synthetic:<i>` and times when declared), or requests without the label and event
    columns/keys when `labels` is None. Missing values: an empty cell, an absent key."""
    fields: dict[str, Any] = {f.name: f for f in (*schema.dense, *schema.categorical,
                                                  *schema.multi)}
    events = [f for f in (schema.label, schema.event_id, schema.event_time) if f is not None]
    fields.update({f.name: f for f in events})
    out = []
    for i, record in enumerate(records):
        values = dict(record)
        if labels is not None:
            values[schema.label.name] = labels[i]
            if schema.event_id is not None:
                values[schema.event_id.name] = f"synthetic:{i}"
            if schema.event_time is not None:
                values[schema.event_time.name] = 1_700_000_000_000 + i
        if schema.format.kind == "jsonl":
            event: dict[str, Any] = {}
            for name, value in values.items():
                if value is None:
                    continue
                path = fields[name].json_path
                node = event
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = value
            out.append(json.dumps(event))
            continue
        delimiter = "\t" if schema.format.kind == "tsv" else ","
        cells = []
        for column in schema.columns():
            if labels is None and column in {f.name for f in events}:
                continue
            value = values.get(column)
            field = fields.get(column)
            if isinstance(value, list):
                sep = getattr(field, "separator", "|")
                cells.append(sep.join(str(v) for v in value))
            else:
                cells.append("" if value is None else str(value))
        out.append(delimiter.join(cells))
    return out


def schema_vocab_ids(schema: FeatureSchema, rng: np.random.Generator,
                     n: int = 2000) -> npt.NDArray[np.uint64]:
    """The sorted feature ids of `n` synthetic records of `schema` and every fallback id."""
    layout = compile_layout(schema, 8)
    ids = Transform(schema, layout).ids(records_to_raw(schema, synthetic_records(schema, n, rng)))
    return np.unique(np.concatenate([ids.reshape(-1), layout.fallback_ids()]))


def vocab_ids() -> npt.NDArray[np.uint64]:
    """The sorted feature ids of the Criteo preset's synthetic values (and the fallback ids)."""
    schema = load_schema("criteo")
    cats = {f.name: [f"{v:08x}" for v in range(VOCAB)] for f in schema.categorical}
    layout = compile_layout(schema, 8)
    ids = Transform(schema, layout).ids(records_to_raw(schema, [
        {name: values[v] for name, values in cats.items()} for v in range(VOCAB)]))
    return np.unique(np.concatenate([ids.reshape(-1), layout.fallback_ids()]))


def synthetic_meta(seq: int, auc: float | None = 0.7, **update: Any) -> dict[str, Any]:
    """A trainer export meta (the `ExportMeta` contract) for export `seq`: windows
    10*seq..10*seq+9, the store position, `auc` as the last window's progressive AUC."""
    return ExportMeta(
        window_first=10 * seq, window_last=10 * seq + 9, samples=1000 * seq,
        store=StoreRange(stream_id=f"{seq}-0", seq=5 * seq),
        metrics=ProgressiveMetrics(samples=500, positives=100, auc=auc, logloss=0.45),
    ).model_copy(update=update).to_dict()


def full_export(
    spec: ModelSpec, rng: np.random.Generator, *, n_rows: int | None = None, seq: int = 1,
    meta: dict[str, Any] | None = None, ids: npt.NDArray[np.uint64] | None = None,
) -> ModelExport:
    """A full export: rows for `ids`, else the Criteo synthetic vocabulary's ids
    (n_rows=None) or n_rows random ids."""
    if ids is None:
        ids = vocab_ids() if n_rows is None else np.unique(
            rng.integers(0, 2**63, n_rows, dtype=np.uint64))
    rows = rng.normal(0, 0.1, (len(ids), spec.row_width)).astype(np.float32)
    return ModelExport(spec, "full", seq, None, dense_weights(spec, rng), ids, rows,
                       meta=dict(meta or synthetic_meta(seq)))


def schema_export(
    schema: FeatureSchema, rng: np.random.Generator, *,
    model_type: Literal["wide_deep", "dcn"] = "wide_deep", embedding_dim: int = 8,
    hidden_units: tuple[int, ...] = (16,), cross_layers: int = 1, seq: int = 1,
) -> ModelExport:
    """A full export of a model on `schema`'s layout over its synthetic vocabulary."""
    layout = compile_layout(schema, embedding_dim)
    spec = ModelSpec.from_layout(layout, model_type, hidden_units,
                                 cross_layers if model_type == "dcn" else 0)
    return full_export(spec, rng, seq=seq, ids=schema_vocab_ids(schema, rng))


def delta_export(
    base: ModelExport, rng: np.random.Generator, *, change: float = 0.05, evict: float = 0.01,
    add: int = 10, seq: int | None = None, meta: dict[str, Any] | None = None,
) -> ModelExport:
    """A delta onto `base` (full): a `change` fraction of its rows changed, an `evict`
    fraction evicted, `add` new random ids; new dense weights."""
    n = len(base.ids)
    picked = rng.permutation(n)
    n_change, n_evict = int(n * change), int(n * evict)
    changed = base.ids[picked[:n_change]]
    evicted = np.sort(base.ids[picked[n_change : n_change + n_evict]])
    new = rng.integers(0, 2**63, add, dtype=np.uint64)
    new = new[~np.isin(new, base.ids)]
    ids = np.concatenate([changed, new])
    rows = rng.normal(0, 0.1, (len(ids), base.spec.row_width)).astype(np.float32)
    seq = base.export_seq + 1 if seq is None else seq
    return ModelExport(
        base.spec, "delta", seq, base.export_seq,
        dense_weights(base.spec, rng), ids, rows, evicted, dict(meta or synthetic_meta(seq)),
    )


def criteo_rows(n: int, rng: np.random.Generator, *, label: bool = True) -> list[str]:
    """n random valid rows of the Criteo preset over the synthetic vocabulary (some values
    missing)."""
    schema = load_schema("criteo")
    labels = [int(v) for v in rng.integers(0, 2, n)] if label else None
    return schema_rows(schema, synthetic_records(schema, n, rng), labels)
