"""`freshrec evaluate`: score a labelled file of raw rows in the model's feature schema's format
(a Criteo TSV for the Criteo preset, JSON lines for `ecommerce`, ...) with a registry version or
an export. Rows the schema's RowParser refuses are skipped and counted.

The schema: a registry version's own (its artifact), else the bundled preset of the export's
`schema_hash`, else FRESHREC_SCHEMA when its hash is the export's. FRESHREC_SCHEMA set to another
schema than the model's is refused (SchemaError).

Model URIs: `models:/NAME@ALIAS`, `models:/NAME/VERSION` (materialized from the registry, every
checksum verified), or a local directory: an export (with manifest.json; must be full) or a
directory of exports (trainer layout: one sub-directory per export): the newest full export
with the deltas after it applied in order; or a trainer checkpoint directory (sub-directories
`ckpt-*/state.json`): the newest checkpoint's `run_id`, `last_full_seq` and `export_seq` name
the trainer exports in MLflow that hold the same model (the engine state itself needs
TensorFlow, which evaluation does not load). state.json is the `CheckpointState` record of
`stages.common.trainer_state`, which the trainer writes: a file contract, not an import.
"""

from __future__ import annotations

import gzip
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stages.common.errors import ContractError, PublishError
from stages.common.model_export import MANIFEST, ModelExport, apply_delta, read_export
from stages.common.settings import CommonSettings
from stages.common.trainer_state import CheckpointState
from stages.publish.core.metrics import EvalMetrics, evaluate_predictions
from stages.publish.core.requests import RequestRows
from stages.publish.loaded import LoadedModel, check_expected_schema, sorted_full

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
CHUNK = 20_000


def load_export_dir(directory: Path) -> ModelExport:
    """The full model in an export directory or a directory of exports (see module doc)."""
    if (directory / MANIFEST).is_file():
        export = read_export(directory)
        if export.kind != "full":
            raise ContractError(f"{directory} is a delta export; pass the directory of exports")
        return sorted_full(export)
    exports = sorted(
        (read_export(p) for p in directory.iterdir() if (p / MANIFEST).is_file()),
        key=lambda e: e.export_seq,
    )
    fulls = [i for i, e in enumerate(exports) if e.kind == "full"]
    if not fulls:
        raise ContractError(f"{directory} holds no full export")
    model = sorted_full(exports[fulls[-1]])
    for delta in exports[fulls[-1] + 1 :]:
        model = apply_delta(model, delta)
    return model


def load_checkpoint_dir(common: CommonSettings, directory: Path) -> ModelExport:
    """The model of the newest trainer checkpoint under `directory`, from its MLflow exports."""
    states = sorted(directory.glob("ckpt-*/state.json"))
    if not states:
        raise PublishError(f"{directory} holds no export, exports or checkpoints (ckpt-*/)")
    try:
        state = CheckpointState.parse(states[-1].read_bytes())
    except (OSError, ContractError) as exc:
        raise ContractError(f"unreadable checkpoint state {states[-1]}: {exc}") from None
    run_id, first, last = state.run_id, state.last_full_seq, state.export_seq
    if not run_id or first < 1 or last < first:
        raise PublishError(f"checkpoint {states[-1].parent.name} has no export to evaluate yet")
    from stages.publish.registry import Registry

    registry = Registry(common)
    with tempfile.TemporaryDirectory() as work:
        model = sorted_full(registry.trainer_export(run_id, first, Path(work)))
        for seq in range(first + 1, last + 1):
            model = apply_delta(model, registry.trainer_export(run_id, seq, Path(work)))
    return model


def _loaded(common: CommonSettings, export: ModelExport, version: str, schema: Any) -> LoadedModel:
    """The model with its schema (see the module docstring), checked against FRESHREC_SCHEMA
    when that is set."""
    expected = common.schema() if "feature_schema" in common.model_fields_set else None
    if schema is None:
        own = expected or common.schema()
        schema = own if own.schema_hash == export.spec.schema_hash else None
    model = LoadedModel(export, version, "full", 0, schema)
    if model.schema is not None:
        check_expected_schema(expected, model.schema, f"model {version or 'export'}")
    return model


def load_model(common: CommonSettings, uri: str) -> LoadedModel:
    """The model named by `uri` (see module doc); PublishError when it cannot be found."""
    match = _URI.match(uri)
    if match is None:
        path = Path(uri)
        if not path.is_dir():
            raise PublishError(
                f"{uri!r} is neither models:/NAME@ALIAS, models:/NAME/VERSION nor a directory"
            )
        if (path / MANIFEST).is_file() or any(path.glob(f"*/{MANIFEST}")):
            return _loaded(common, load_export_dir(path), "", None)
        return _loaded(common, load_checkpoint_dir(common, path), "", None)
    from stages.publish.registry import Registry

    registry = Registry(common.model_copy(update={"model_name": match["name"]}))
    version = int(match["version"]) if match["version"] else None
    if version is None:
        version = registry.alias_version(match["alias"])
        if version is None:
            raise PublishError(f"model {match['name']} has no alias {match['alias']!r}")
    with tempfile.TemporaryDirectory() as work:
        export = registry.materialize(version, Path(work))
        schema = registry.version_schema(version, Path(work))
    return _loaded(common, export, str(version), schema)


def _lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        yield from handle


def evaluate_file(model: LoadedModel, data: Path) -> tuple[EvalMetrics, int]:
    """Metrics over the valid labelled rows of `data` (.gz read as gzip; rows in the model's
    schema's format) and the number of rows skipped as malformed. PublishError when the file
    is missing or has no valid row."""
    if not data.is_file():
        raise PublishError(f"no data file {data}")
    parser = model.requests
    labels: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    skipped = 0
    chunk: list[bytes] = []

    def flush() -> None:
        nonlocal skipped
        parsed = parser.row_parser.parse(chunk)
        skipped += len(parsed.bad)
        chunk.clear()
        if len(parsed.raw):
            rows = RequestRows(parsed.raw, np.ones(len(parsed.raw), dtype=np.bool_))
            labels.append(parsed.raw.label)
            probs.append(model.predict(parser.inputs(rows)))

    for line in _lines(data):
        row = line.rstrip(b"\r\n")
        if not row:
            continue
        chunk.append(row)
        if len(chunk) >= CHUNK:
            flush()
    if chunk:
        flush()
    if not labels:
        raise PublishError(f"{data} has no valid labelled row of feature schema "
                           f"{parser.schema.schema_id} ({skipped} malformed)")
    return evaluate_predictions(np.concatenate(labels), np.concatenate(probs)), skipped
