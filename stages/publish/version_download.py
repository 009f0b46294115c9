"""Reading registry versions back: one version's export verified, its feature schema, and a
version's full model materialised from its chain. Part of `registry.Registry` (a mixin, kept
apart to keep each module small); it uses the registry's MLflow client and request wrapper."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from stages.common.errors import ContractError, PublishError
from stages.common.model_export import ModelExport, ModelSpec, apply_delta
from stages.common.schema import FeatureSchema
from stages.common.settings import CommonSettings
from stages.publish.core import plan
from stages.publish.core.chain import EXPORT_PATHS
from stages.publish.core.plan import VersionInfo
from stages.publish.loaded import (
    SCHEMA_FILE, check_expected_schema, find_export_dir, read_schema_json, schema_of_spec,
    sorted_full, verified_export,
)


class VersionDownloads:
    """What the registry reads of its versions (see the module docstring)."""

    client: Any
    name: str
    common: CommonSettings

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError  # Registry._call

    def version_info(self, version: int) -> VersionInfo:
        raise NotImplementedError  # Registry.version_info

    def download_version(self, info: VersionInfo, work: Path) -> ModelExport:
        """Download and verify one version's export (manifest sha256 against its tag, every
        array against the manifest). ContractError when corrupt or incomplete."""
        mv = self._call("read a model version", self.client.get_model_version,
                        self.name, str(info.version))
        source = str(mv.source)
        if not source.startswith("runs:/"):
            raise ContractError(f"version {info.version} has a foreign source {source}")
        run_id, _, rel = source.removeprefix("runs:/").partition("/")
        dst = Path(tempfile.mkdtemp(dir=work))
        try:
            # only the export: the pyfunc files around it are for plain MLflow
            root = Path(self._call("download a version", self.client.download_artifacts,
                                   run_id, f"{rel}/{EXPORT_PATHS[info.kind]}", str(dst)))
            return verified_export(find_export_dir(root), info.manifest_sha256,
                                   info.publish_seq, f"version {info.version}")
        finally:
            shutil.rmtree(dst, ignore_errors=True)

    def version_schema(self, version: int, work: Path) -> FeatureSchema | None:
        """The feature schema version `version` carries (`artifacts/schema.json`), None for a
        version registered before versions carried one."""
        mv = self._call("read a model version", self.client.get_model_version,
                        self.name, str(version))
        run_id, _, rel = str(mv.source).removeprefix("runs:/").partition("/")
        listed = self._call("list a version", self.client.list_artifacts, run_id,
                            f"{rel}/artifacts")
        if not any(f.path.endswith(f"/{SCHEMA_FILE}") for f in listed):
            return None
        with tempfile.TemporaryDirectory(dir=work) as dst:
            local = self._call("download a version's schema", self.client.download_artifacts,
                               run_id, f"{rel}/artifacts/{SCHEMA_FILE}", dst)
            return read_schema_json(Path(local).read_text("utf-8"), f"version {version}")

    def served_schema(self, version: int, spec: ModelSpec, work: Path) -> FeatureSchema:
        """The schema to serve version `version` (model `spec`) with: its own, else the preset
        of its spec (`loaded.schema_of_spec`); refused (ServedSchemaError, a ContractError)
        when FRESHREC_SCHEMA is set to another schema."""
        schema = schema_of_spec(spec, self.version_schema(version, work))
        if "feature_schema" in self.common.model_fields_set:
            check_expected_schema(self.common.schema(), schema, f"version {version}")
        return schema

    def materialize(
        self, target: int, work: Path, have: tuple[int, ModelExport] | None = None
    ) -> ModelExport:
        """The full model of version `target`: its chain downloaded, verified and applied
        (starting from `have` = (version, full model) when it is on the chain)."""
        chain = plan.serving_chain(target, self.version_info, have[0] if have else None)
        model = have[1] if have and (not chain or chain[0].kind == "delta") else None
        for info in chain:
            export = self.download_version(info, work)
            if model is None:
                model = sorted_full(export)
            else:
                model = apply_delta(model, export)
        if model is None:
            raise PublishError(f"version {target} has nothing to apply")
        return model
