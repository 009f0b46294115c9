"""MLflow adapter: trainer exports in, registry versions and aliases out.

Every registry version is the run-artifact directory `publish/<publish_seq:08d>/` of a
publisher run (tags `freshrec.role=publisher`, `freshrec.model=<name>`: one run per registered
model, which a restarted publisher continues), registered with `source=runs:/<run>/<dir>`, and
is an MLflow pyfunc model (`version_model.py`): a full version's export is its artifact
`artifacts/export/`; a delta version holds `export/` and a chain file naming the versions it
applies onto, so plain MLflow loads any version. No pickle.

Registering is idempotent per publish_seq: a version tagged `freshrec.publish_seq = S` is never
created twice (a publisher killed after creating it adopts it). MLflow requests get short socket
timeouts and few retries of their own (the publisher's loop retries whole cycles).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from stages.common.errors import ContractError, PublishError, ServiceUnavailable, require
from stages.common.model_export import (
    ARTIFACT_DIR, TAG_EXPORT_SEQ, TAG_ROLE, ModelExport, artifact_path, read_export,
)
from stages.common.settings import CommonSettings, redact_text, redact_url
from stages.publish.core import plan
from stages.publish.core.chain import VersionChain, link_of, public_uri
from stages.publish.core.plan import VersionInfo
from stages.publish.loaded import manifest_sha256
from stages.publish.version_model import save_version_model
from stages.publish.version_download import VersionDownloads

__all__ = ["PUBLISH_DIR", "Registry", "manifest_sha256"]
log = logging.getLogger(__name__)
PUBLISH_DIR = "publish"
# MLflow reads these per request (unless set): one cycle must not hang for minutes in an outage.
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
TAG_MODEL = "freshrec.model"  # on the publisher run: the registered model it publishes
TAG_SCHEMA = "freshrec.schema"  # on a version: the schema_id of its feature schema


def error_code(exc: BaseException) -> str | None:
    """The MlflowException error code of `exc` (None for a connection error and the like)."""
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, str) else None


class Registry(VersionDownloads):
    """The registered model `common.model_name` and the trainer runs of the experiment."""

    def __init__(self, common: CommonSettings) -> None:
        tracking = require("mlflow.tracking", "publish")
        if common.mlflow_token is not None:
            os.environ.setdefault("MLFLOW_TRACKING_TOKEN", common.mlflow_token.get_secret_value())
        for key, value in HTTP_ENV.items():
            os.environ.setdefault(key, value)
        self.common = common
        self.name = common.model_name
        self.client: Any = tracking.MlflowClient(  # type: ignore[attr-defined]
            tracking_uri=common.mlflow_tracking_uri, registry_uri=common.mlflow_tracking_uri
        )
        self._publisher_run: str | None = None
        self._repos: dict[str, Any] = {}

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # MLflow raises MlflowException, requests' errors, OSError
            text = redact_text(str(exc))[:300]
            if error_code(exc) == NOT_FOUND:
                raise PublishError(f"MLflow could not {what}: not found: {text}") from exc
            raise ServiceUnavailable(
                f"MLflow at {redact_url(self.common.mlflow_tracking_uri)} failed to {what}: "
                f"{type(exc).__name__}: {text}; check the server or FRESHREC_MLFLOW_TRACKING_URI"
            ) from exc

    # --- trainer side -------------------------------------------------------------------
    def experiment_id(self) -> str | None:
        exp = self._call("read the experiment", self.client.get_experiment_by_name,
                         self.common.mlflow_experiment)
        return None if exp is None else str(exp.experiment_id)

    def trainer_head(self, run_id: str | None) -> tuple[str, int] | None:
        """(run id, last uploaded export seq) of `run_id` or of the newest trainer run with an
        export; None when there is none yet."""
        if run_id is not None:
            run = self._call("read the trainer run", self.client.get_run, run_id)
            seq = run.data.tags.get(TAG_EXPORT_SEQ)
            return (run_id, int(seq)) if seq else None
        exp = self.experiment_id()
        if exp is None:
            return None
        runs = self._call(
            "list trainer runs", self.client.search_runs, [exp],
            filter_string=f"tags.`{TAG_ROLE}` = 'trainer'", order_by=["start_time DESC"],
            max_results=20,
        )
        for run in runs:
            seq = run.data.tags.get(TAG_EXPORT_SEQ)
            if seq:
                return str(run.info.run_id), int(seq)
        return None

    def trainer_export(self, run_id: str, seq: int, work: Path) -> ModelExport:
        """Download and verify trainer export `seq` of `run_id` (ContractError when corrupt)."""
        dst = Path(tempfile.mkdtemp(dir=work))
        try:
            path = self._call("download a trainer export", self.client.download_artifacts,
                              run_id, artifact_path(seq), str(dst))
            return read_export(Path(path))
        finally:
            shutil.rmtree(dst, ignore_errors=True)

    # --- registry side ------------------------------------------------------------------
    def ensure_model(self, description: str | None = None) -> None:
        """Create the registered model when absent, with `description`; set `description` on
        an existing model when it differs (None: leave an existing model's description)."""
        try:
            model = self.client.get_registered_model(self.name)
        except Exception as exc:
            if error_code(exc) != NOT_FOUND:
                raise ServiceUnavailable(
                    f"MLflow: cannot read model {self.name}: {redact_text(str(exc))}"
                ) from exc
            self._call("create the registered model", self.client.create_registered_model,
                       self.name, tags={"freshrec.model": "ctr"}, description=description)
            return
        if description is not None and (model.description or "") != description:
            self._call("describe the registered model", self.client.update_registered_model,
                       self.name, description=description)

    def describe_version(self, version: int, description: str) -> None:
        self._call("describe a model version", self.client.update_model_version,
                   self.name, str(version), description=description)

    def version_info(self, version: int) -> VersionInfo:
        mv = self._call("read a model version", self.client.get_model_version,
                        self.name, str(version))
        return plan.parse_version(int(mv.version), dict(mv.tags))

    def latest_version(self) -> VersionInfo | None:
        """The version with the highest publish_seq (the publisher's last), None when none."""
        # the publisher creates versions in publish order: the newest few suffice
        found = self._call("list model versions", self.client.search_model_versions,
                           f"name = '{self.name}'", max_results=20,
                           order_by=["version_number DESC"])
        infos = []
        for mv in found:
            if plan.T_PUBLISH_SEQ in mv.tags:
                infos.append(plan.parse_version(int(mv.version), dict(mv.tags)))
        return max(infos, key=lambda i: i.publish_seq, default=None)

    def alias_version(self, alias: str) -> int | None:
        """The version under `alias`, None when the alias (or the model) does not exist.

        MLflow reserves the alias name `latest` (it cannot be set): here it means the newest
        freshrec version (highest publish_seq), which is where `latest` always points."""
        if alias.lower() == "latest":
            newest = self.latest_version()
            return None if newest is None else newest.version
        try:
            mv = self.client.get_model_version_by_alias(self.name, alias)
        except Exception as exc:
            if error_code(exc) in (NOT_FOUND, "INVALID_PARAMETER_VALUE"):
                return None
            raise ServiceUnavailable(
                f"MLflow: cannot read alias {alias}: {redact_text(str(exc))}"
            ) from exc
        return int(mv.version)

    def _run(self) -> str:
        """The publisher run of this registered model (tags `freshrec.role=publisher`,
        `freshrec.model=<name>`): the oldest such run of the experiment, set RUNNING again, so
        a restarted publisher continues it; created only when there is none."""
        if self._publisher_run is None:
            exp = self.experiment_id()
            if exp is None:
                exp = self._call("create the experiment", self.client.create_experiment,
                                 self.common.mlflow_experiment)
            name = self.name.replace("'", "\\'")
            found = self._call(
                "look for the publisher run", self.client.search_runs, [exp],
                filter_string=f"tags.`{TAG_ROLE}` = 'publisher' and "
                f"tags.`{TAG_MODEL}` = '{name}'",
                order_by=["start_time ASC"], max_results=1,
            )
            if found:
                run_id = str(found[0].info.run_id)
                self._call("resume the publisher run", self.client.update_run, run_id,
                           status="RUNNING")
                log.info("continuing publisher run %s of model %s", run_id, self.name)
            else:
                run = self._call("create the publisher run", self.client.create_run, exp,
                                 tags={TAG_ROLE: "publisher", TAG_MODEL: self.name},
                                 run_name=f"publisher-{self.name}")
                run_id = str(run.info.run_id)
                log.info("created publisher run %s of model %s", run_id, self.name)
            self._publisher_run = run_id
        return self._publisher_run

    def close(self) -> None:
        """Mark this publisher's run FINISHED (it holds the artifacts of the versions; the
        next publisher of this model sets it RUNNING again)."""
        if self._publisher_run is not None:
            self._call("finish the publisher run", self.client.set_terminated,
                       self._publisher_run)
            self._publisher_run = None

    def find_version(self, publish_seq: int) -> tuple[int, dict[str, str]] | None:
        """(version, tags) of the version tagged `freshrec.publish_seq = publish_seq` (the
        lowest, should there be several), None when there is none."""
        found = self._call(
            "look for a version", self.client.search_model_versions,
            f"name = '{self.name}' and tags.`{plan.T_PUBLISH_SEQ}` = '{publish_seq}'",
            max_results=10,
        )
        versions = sorted((int(mv.version), dict(mv.tags)) for mv in found)
        return versions[0] if versions else None

    def version_tags(self, version: int) -> dict[str, str]:
        mv = self._call("read a model version", self.client.get_model_version,
                        self.name, str(version))
        return dict(mv.tags)

    def register(self, export_dir: Path, tags: dict[str, str], description: str = "") -> int:
        """Upload the export in `export_dir` as a pyfunc model (with its chain file, computed
        from the tags and the registry) and create its model version (with `description`,
        which the gate decision later replaces). Idempotent: when a
        version with this publish_seq exists already, that version is returned (logged)."""
        seq = int(tags[plan.T_PUBLISH_SEQ])
        existing = self.find_version(seq)
        if existing is not None:
            log.warning("publish_seq %d is registered already as v%d: not registering it again",
                        seq, existing[0])
            return existing[0]
        chain = self.chain_for(tags)
        run_id = self._run()
        rel = f"{PUBLISH_DIR}/{seq:08d}"
        schema = self.common.schema()
        tags = {**tags, TAG_SCHEMA: schema.schema_id}
        with tempfile.TemporaryDirectory(dir=export_dir.parent) as tmp:
            staged = Path(tmp) / "version"
            save_version_model(export_dir, chain, staged, schema)
            self._call("upload a version", self.client.log_artifacts, run_id, str(staged), rel)
        mv = self._call("create a model version", self.client.create_model_version,
                        self.name, f"runs:/{run_id}/{rel}", run_id=run_id, tags=tags,
                        description=description or None)
        return int(mv.version)

    def chain_for(self, tags: dict[str, str]) -> VersionChain:
        """The chain file of a version about to be registered with `tags`: for a delta, the
        versions from the last full one up to its base (`freshrec.base_version`), as they are
        registered (their tags and sources)."""
        kind = tags[plan.T_KIND]
        links = []
        if kind == "delta":
            base = tags.get(plan.T_BASE_VERSION)
            if not base:
                raise ContractError(f"a delta version needs the tag {plan.T_BASE_VERSION}")
            sources: dict[int, str] = {}

            def info(version: int) -> VersionInfo:
                mv = self._call("read a model version", self.client.get_model_version,
                                self.name, str(version))
                sources[version] = str(mv.source)
                return plan.parse_version(int(mv.version), dict(mv.tags))

            links = [link_of(i, sources[i.version])
                     for i in plan.serving_chain(int(base), info, None)]
        return VersionChain(
            model_name=self.name, registry_uri=public_uri(self.common.mlflow_tracking_uri),
            kind="full" if kind == "full" else "delta", publish_seq=int(tags[plan.T_PUBLISH_SEQ]),
            manifest_sha256=tags[plan.T_MANIFEST_SHA], links=tuple(links),
        )

    def set_alias(self, alias: str, version: int) -> None:
        self._call("set an alias", self.client.set_registered_model_alias,
                   self.name, alias, str(version))

    def tag_version(self, version: int, key: str, value: str) -> None:
        self._call("tag a version", self.client.set_model_version_tag,
                   self.name, str(version), key, value)

    def promote(self, version: int) -> None:
        """Move `production` to `version` and append it to the production history."""
        model = self._call("read the model", self.client.get_registered_model, self.name)
        history = plan.push_history(model.tags.get(plan.T_PRODUCTION_HISTORY), version)
        self.set_alias("production", version)
        self._call("tag the model", self.client.set_registered_model_tag,
                   self.name, plan.T_PRODUCTION_HISTORY, history)

    def rollback(self) -> tuple[int | None, int]:
        """Move `production` back to the previous production version: (from, to)."""
        model = self._call("read the model", self.client.get_registered_model, self.name)
        current = self.alias_version("production")
        target, history = plan.pop_history(model.tags.get(plan.T_PRODUCTION_HISTORY), current)
        self.set_alias("production", target)
        self._call("tag the model", self.client.set_registered_model_tag,
                   self.name, plan.T_PRODUCTION_HISTORY, history)
        return current, target

    # --- retention ----------------------------------------------------------------------
    def freshrec_versions(self) -> list[VersionInfo]:
        """Every version of the model that carries freshrec's tags (others are not ours and
        are left out), in no particular order."""
        infos: list[VersionInfo] = []
        token: str | None = None
        while True:
            page = self._call("list model versions", self.client.search_model_versions,
                              f"name = '{self.name}'", max_results=1000, page_token=token)
            for mv in page:
                try:
                    infos.append(plan.parse_version(int(mv.version), dict(mv.tags)))
                except ContractError:
                    continue
            token = getattr(page, "token", None)
            if not token:
                return infos

    def production_history(self) -> str | None:
        model = self._call("read the model", self.client.get_registered_model, self.name)
        value = model.tags.get(plan.T_PRODUCTION_HISTORY)
        return None if value is None else str(value)

    def set_production_history(self, history: str) -> None:
        self._call("tag the model", self.client.set_registered_model_tag,
                   self.name, plan.T_PRODUCTION_HISTORY, history)

    def delete_version(self, version: int) -> None:
        """Delete model version `version` and then its artifact directory (`publish/<seq>` of
        the publisher run that holds it). A version whose source is not such a directory loses
        only its registry entry (logged). Deleting a version that is gone already is a no-op."""
        try:
            mv = self.client.get_model_version(self.name, str(version))
        except Exception as exc:
            if error_code(exc) == NOT_FOUND:
                return
            raise ServiceUnavailable(f"MLflow: cannot read v{version}: {exc}") from exc
        source = str(mv.source)
        self._call("delete a model version", self.client.delete_model_version,
                   self.name, str(version))
        run_id, _, rel = source.removeprefix("runs:/").partition("/")
        if not source.startswith("runs:/") or not rel.startswith(PUBLISH_DIR + "/"):
            log.warning("v%d had the source %s: its artifacts are not freshrec's to delete",
                        version, source)
            return
        self.delete_run_artifacts(run_id, rel)

    def delete_run_artifacts(self, run_id: str, rel: str) -> None:
        """Delete the artifact directory `rel` of run `run_id` (through the run's artifact
        repository: the server's for `mlflow-artifacts:` URIs, the files of a local store).
        MlflowClient has no call for it."""
        repository = self._artifact_repo(run_id)
        self._call(f"delete the artifacts {rel} of run {run_id}",
                   repository.delete_artifacts, rel)

    def _artifact_repo(self, run_id: str) -> Any:
        repo = self._repos.get(run_id)
        if repo is None:
            registry = require("mlflow.store.artifact.artifact_repository_registry", "publish")
            run = self._call("read a run", self.client.get_run, run_id)
            repo = registry.get_artifact_repository(  # type: ignore[attr-defined]
                run.info.artifact_uri, tracking_uri=self.common.mlflow_tracking_uri
            )
            self._repos[run_id] = repo
        return repo

    def trainer_export_seqs(self, run_id: str) -> list[int]:
        """The export seqs whose artifact directories `exports/<seq>` run `run_id` holds."""
        listed = self._call("list trainer exports", self.client.list_artifacts,
                            run_id, ARTIFACT_DIR)
        seqs = []
        for item in listed:
            name = str(item.path).rpartition("/")[2]
            if item.is_dir and name.isdigit():
                seqs.append(int(name))
        return sorted(seqs)

    def delete_trainer_export(self, run_id: str, seq: int) -> None:
        self.delete_run_artifacts(run_id, artifact_path(seq))

    # --- reading versions back ----------------------------------------------------------
