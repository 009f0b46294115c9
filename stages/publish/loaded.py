"""A servable model: a materialized full export, its feature schema, where it came from. No
MLflow here.

Shared by serving, evaluate and the MLflow pyfunc model. The schema is the one the registry
version carries (`version_model.SCHEMA_ARTIFACT`); a model without one (exported or
registered before schemas) is resolved by its `spec.schema_hash` among the bundled presets
(empty hash: the Criteo preset). A schema whose hash is not the model's is refused.

Exports are located inside a registry version's artifacts: `export/` (delta versions) or
`artifacts/export/` (full versions); both kinds are also an MLflow pyfunc model (see
`version_model.py`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stages.common.errors import ContractError
from stages.common.model_export import MANIFEST, ModelExport, ModelSpec, read_export
from stages.common.schema import (
    FeatureSchema, SchemaError, load_schema, parse_schema, preset_names,
)
from stages.publish.core.requests import ModelInputs, RequestParser
from stages.publish.core.scoring import Scorer

EXPORT_SUBDIRS = ("export", "artifacts/export")


def find_export_dir(root: Path) -> Path:
    """The export directory inside a downloaded version; ContractError when there is none."""
    for sub in EXPORT_SUBDIRS:
        if (root / sub / MANIFEST).is_file():
            return root / sub
    if (root / MANIFEST).is_file():
        return root
    raise ContractError(f"{root} holds no export (no {MANIFEST} in {', '.join(EXPORT_SUBDIRS)})")


def manifest_sha256(export_dir: Path) -> str:
    """sha256 of the export's manifest file (which holds the sha256 of every array)."""
    return hashlib.sha256((export_dir / MANIFEST).read_bytes()).hexdigest()


def verified_export(export_dir: Path, sha256: str, publish_seq: int, what: str) -> ModelExport:
    """Read the export of a registry version (`what` names it in errors), checking its manifest
    against `sha256` (the version's tag), every array against the manifest (`read_export`) and
    its export seq against `publish_seq`. ContractError when any check fails."""
    if not (export_dir / MANIFEST).is_file():
        raise ContractError(f"{what}: no export in {export_dir} (no {MANIFEST})")
    if manifest_sha256(export_dir) != sha256:
        raise ContractError(f"{what}: the manifest does not match its sha256 tag")
    export = read_export(export_dir)
    if export.export_seq != publish_seq:
        raise ContractError(f"{what}: export seq {export.export_seq} "
                            f"is not its publish seq {publish_seq}")
    return export


def sorted_full(model: ModelExport) -> ModelExport:
    """`model` (full) with its ids sorted ascending, as `reference_model.predict` needs."""
    if model.kind != "full":
        raise ContractError("only a full model can be served")
    if len(model.ids) < 2 or bool(np.all(model.ids[1:] > model.ids[:-1])):
        return model
    order = np.argsort(model.ids, kind="stable")
    return ModelExport(
        spec=model.spec, kind="full", export_seq=model.export_seq, base_seq=None,
        dense=model.dense, ids=model.ids[order], rows=model.rows[order], meta=model.meta,
    )


# The artifact of a registry version holding its feature schema (`version_model`).
SCHEMA_ARTIFACT = "schema"
SCHEMA_FILE = "schema.json"
LEGACY_PRESET = "criteo"  # the schema of a spec without schema_hash (made before schemas)


@functools.cache
def _preset(name: str) -> FeatureSchema:
    return load_schema(name)


def schema_of_spec(spec: ModelSpec, given: FeatureSchema | None = None) -> FeatureSchema:
    """The feature schema of a model: `given` (the version's) checked against the spec's hash,
    or, when none is given, the bundled preset with that hash. ContractError when `given` is
    another schema's, or none is given and no preset has the hash."""
    want = spec.schema_hash
    if given is not None:
        if given.schema_hash == (want or _preset(LEGACY_PRESET).schema_hash):
            return given
        raise ContractError(f"the model was made with feature schema {want or LEGACY_PRESET}, "
                            f"not {given.schema_id}: set FRESHREC_SCHEMA to the schema it was "
                            "made with")
    for name in (LEGACY_PRESET,) if not want else preset_names():
        schema = _preset(name)
        if not want or schema.schema_hash == want:
            return schema
    raise ContractError(f"the model was made with feature schema {want}, which its version "
                        "does not carry and no bundled preset has: republish it with that "
                        "schema (FRESHREC_SCHEMA) so that the version carries it")


def schema_json(schema: FeatureSchema) -> str:
    """The schema as the JSON a version carries (`read_schema_json` reads it back)."""
    return json.dumps(schema.model_dump(mode="json"), indent=1, sort_keys=True)


def read_schema_json(text: str, what: str) -> FeatureSchema:
    """The schema a version carries; SchemaError naming `what` when it does not parse."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SchemaError(f"{what}: not valid JSON: {exc}") from None
    return parse_schema(data, what)


class ServedSchemaError(SchemaError, ContractError):
    """A model of another feature schema than the one a stage was told to run: refused."""


def check_expected_schema(expected: FeatureSchema | None, served: FeatureSchema,
                          what: str) -> None:
    """SchemaError when a stage was told to run `expected` (FRESHREC_SCHEMA set explicitly)
    but the model `what` was made with `served`."""
    if expected is not None and expected.schema_hash != served.schema_hash:
        raise ServedSchemaError(f"{what} was made with feature schema {served.schema_id}, but "
                          f"FRESHREC_SCHEMA names {expected.schema_id}: unset FRESHREC_SCHEMA "
                          "(the version's own schema is used) or serve a model of that schema")


@dataclass(frozen=True)
class LoadedModel:
    """An immutable servable model. `version` is the registry version ("" when not from the
    registry); `schema` the feature schema it was made with (None: resolved from the spec,
    see `schema_of_spec`; ContractError when it does not fit). Swapping models means
    replacing the whole object, never mutating one. `requests` parses requests by the
    schema; `scorer` scores them (`core.scoring`: the reference's model, its hash index and
    float32 weights built here, once per version, in the follower's thread)."""

    export: ModelExport
    version: str
    kind: str
    loaded_at_ms: int
    schema: FeatureSchema | None = None
    requests: RequestParser = field(init=False, repr=False, compare=False)
    scorer: Scorer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = self.export.spec
        schema = schema_of_spec(spec, self.schema)
        parser = RequestParser(schema, spec.embedding_dim)
        layout = parser.layout
        if (layout.n_dense, layout.n_slots) != (spec.n_dense, spec.n_fields) or (
                spec.slot_tables and layout.slot_tables != spec.slot_tables):
            raise ContractError(f"feature schema {schema.schema_id} does not give the model's "
                                f"inputs ({spec.n_dense} dense, {spec.n_fields} slots)")
        object.__setattr__(self, "schema", schema)
        object.__setattr__(self, "requests", parser)
        object.__setattr__(self, "scorer", Scorer(self.export))

    def predict(self, inputs: ModelInputs) -> npt.NDArray[np.float64]:
        """Click probabilities float64[n] (the reference forward pass, computed in float32)."""
        return self.scorer.predict(inputs.dense, inputs.ids)
