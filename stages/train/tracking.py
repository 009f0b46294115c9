"""The trainer's MLflow run: window metrics, missed data, and the model exports.

One run per trainer (per checkpoint directory), tagged `freshrec.role=trainer`; its id is kept
in the checkpoint directory, so a restarted trainer continues the same run. Window metrics are
logged with `step = window number` (a window retrained after a restart logs its step again).
Exports are uploaded as the artifact directory `model_export.artifact_path(seq)`, and only then
is the tag `freshrec.export_seq` set (see `stages.common.model_export`). Only rank 0 tracks.

Lineage (`lineage.py`): the run carries the source commit (`mlflow.source.git.commit`, MLflow's
own tag), `freshrec.version`, a description (`mlflow.note.content`), the settings as params, and
each export's input as an MLflow dataset. Plots go to `plots/`. All of it is queued in the outbox
like the metrics: none of it makes training wait for MLflow.

Once an export's tag is set, a wake-up hint goes to Redis (`notify.ExportNotifier`) so that the
publisher folds it at once instead of at its next poll; a lost hint only costs that wait.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.common.errors import ServiceUnavailable, TrainError, require
from stages.common.model_export import (
    TAG_EXPORT_SEQ, TAG_ROLE, ModelExport, artifact_path, write_export,
)
from stages.common.settings import CommonSettings, redact_text, redact_url
from stages.train.core.report import WindowReport
from stages.train.lineage import (
    ExportInput, FileDigest, InputSource, common_params, dataset_fields, package_version,
    run_description, source_commit,
)
from stages.train.notify import ExportNotifier
from stages.train.outbox import OutboxConfig, TrackingOutbox
from stages.train.plots import ARTIFACT_DIR, WindowPoint, render_plots
from stages.train.settings import TrainSettings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [  # the lineage values are imported from here by the loop and the trainer
    "ExportInput", "FileDigest", "InputSource", "TrainerTracking", "common_params",
    "dataset_fields", "package_version", "probe_tracking_server", "run_description",
    "source_commit",
]
TAG_CONSUMER = "freshrec.consumer"
TAG_COMMIT = "mlflow.source.git.commit"  # MLflow's own: its UI shows it on the run page
TAG_VERSION = "freshrec.version"
TAG_NOTE = "mlflow.note.content"  # MLflow's run description
DATASET_CONTEXT = "mlflow.data.context"  # MLflow's input tag: training / validation / ...
log = logging.getLogger(__name__)
_PROBE_TIMEOUT_S = 5.0


def probe_tracking_server(common: CommonSettings) -> None:
    """Fail within seconds, in one line, when an http(s) tracking server does not answer
    (MLflow's own client would retry for minutes). Local stores (sqlite:, file:) need none."""
    uri = common.mlflow_tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    import base64
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(
        urlunsplit(parts._replace(netloc=netloc)).rstrip("/") + "/health"
    )
    if parts.username:
        userinfo = f"{parts.username}:{parts.password or ''}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(userinfo).decode())
    try:
        with urllib.request.urlopen(request, timeout=_PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # it answered (a proxy or an auth layer may not know /health)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceUnavailable(
            f"no MLflow tracking server answers at {redact_url(uri)} ({reason}): start one "
            "(`freshrec infra up`), or set FRESHREC_MLFLOW_TRACKING_URI, e.g. "
            "sqlite:///.freshrec/mlflow.db to track into a local store"
        ) from None


class TrainerTracking:
    """Logging into one MLflow run. Build it with `open`, then `start` it."""

    def __init__(
        self, client: MlflowClient, run_id: str, outbox: OutboxConfig | None = None,
        flush_s: float = 60.0,
    ) -> None:
        self._client = client
        self.run_id = run_id
        # Without an outbox config every call goes to MLflow at once (and raises).
        self.outbox = TrackingOutbox(self, outbox) if outbox is not None else None
        self.flush_s = flush_s
        self.source: InputSource | None = None
        self.notifier: ExportNotifier | None = None  # the publisher's wake-up hint, when set

    @classmethod
    def open(
        cls,
        common: CommonSettings,
        run_id: str | None,
        run_name: str,
        params: dict[str, Any],
        settings: TrainSettings | None = None,
    ) -> TrainerTracking:
        """Continue run `run_id`, or create a run (with `params`) in the experiment
        `FRESHREC_MLFLOW_EXPERIMENT` when it is None or gone. ServiceUnavailable when the
        tracking server does not answer. With `settings`, MLflow requests of this process get
        its socket timeout and retries, and tracking goes through an outbox."""
        tracking: Any = require("mlflow.tracking", "train")
        exceptions: Any = require("mlflow.exceptions", "train")
        probe_tracking_server(common)
        if common.mlflow_token is not None:
            # MLflow's REST client reads its bearer token from this variable only.
            os.environ["MLFLOW_TRACKING_TOKEN"] = common.mlflow_token.get_secret_value()
        outbox = None
        if settings is not None:
            # MLflow reads these per request; the defaults (120 s, 7 retries) block minutes.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT",
                                  str(settings.tracking_http_timeout_s))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                  str(settings.tracking_http_retries))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            outbox = OutboxConfig(
                directory=common.state_dir / "train" / "outbox",
                max_exports=settings.tracking_max_exports,
                max_records=settings.tracking_max_records,
                backoff_max_s=settings.tracking_backoff_max_s,
            )
        flush_s = settings.tracking_flush_s if settings is not None else 60.0
        client = tracking.MlflowClient(tracking_uri=common.mlflow_tracking_uri)
        try:
            if run_id is not None:
                try:
                    run = client.get_run(run_id)
                    if run.info.lifecycle_stage == "active":
                        client.update_run(run_id, status="RUNNING")
                        return cls._with_notifier(cls(client, run_id, outbox, flush_s),
                                                  common, settings)
                except exceptions.MlflowException as exc:
                    if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST",
                                              "INVALID_PARAMETER_VALUE"):
                        raise
                    # the run is gone: start a new one below
            experiment = client.get_experiment_by_name(common.mlflow_experiment)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else client.create_experiment(common.mlflow_experiment)
            )
            run = client.create_run(
                experiment_id,
                run_name=run_name,
                tags={TAG_ROLE: "trainer", TAG_CONSUMER: run_name},
            )
            new = cls(client, run.info.run_id, outbox, flush_s)
            new._log_params(params)
            return cls._with_notifier(new, common, settings)
        except exceptions.MlflowException as exc:
            raise ServiceUnavailable(
                f"MLflow at {redact_url(common.mlflow_tracking_uri)} failed ({redact_text(str(exc))}): start it "
                "or set FRESHREC_MLFLOW_TRACKING_URI"
            ) from None

    @staticmethod
    def _with_notifier(tracking: TrainerTracking, common: CommonSettings,
                       settings: TrainSettings | None) -> TrainerTracking:
        if settings is not None and settings.notify_exports:
            tracking.notifier = ExportNotifier.from_settings(common)
        return tracking

    def start(self) -> int:
        """Queue the exports a previous trainer spilled and did not upload, and start sending.
        Returns the last export seq of the run: uploaded (its tag) or queued."""
        uploaded = self.last_export_seq()
        if self.outbox is None:
            return uploaded
        last = self.outbox.recover(self.run_id, uploaded)
        self.outbox.start()
        return last

    def _log_params(self, params: dict[str, Any]) -> None:
        entities: Any = require("mlflow.entities", "train")
        batch = [entities.Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        self._client.log_batch(self.run_id, params=batch)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """Log `values` at `step` in one request (queued)."""
        if self.outbox is not None:
            self.outbox.put_metrics(values, step)
        else:
            self.send_metrics(values, step, int(time.time() * 1000))

    def log_window(self, report: WindowReport, total_missed_blocks: int) -> None:
        """The window's metrics at step = window number, the running missed-block total, and
        the tracking queue's own counters (`tracking_backlog`, `tracking_failures`, ...)."""
        self.log_metrics(
            {**report.as_metrics(), "missed_blocks_total": float(total_missed_blocks),
             **self.counters()},
            report.window,
        )

    def counters(self) -> dict[str, float]:
        """The outbox's state: records waiting, failed attempts, records dropped."""
        if self.outbox is None:
            return {}
        return {
            "tracking_backlog": float(self.outbox.backlog()),
            "tracking_failures": float(self.outbox.failures),
            "tracking_dropped": float(self.outbox.dropped),
        }

    def set_tag(self, key: str, value: str) -> None:
        """Set one tag of the run (values over 5,000 characters are cut; queued)."""
        if self.outbox is not None:
            self.outbox.put_tag(key, value)
        else:
            self.send_tag(key, value)

    def last_export_seq(self) -> int:
        """The tag `freshrec.export_seq` of the run (0 when no export was published)."""
        value = self._client.get_run(self.run_id).data.tags.get(TAG_EXPORT_SEQ)
        try:
            return int(value) if value else 0
        except ValueError:
            raise TrainError(f"run {self.run_id} has a bad {TAG_EXPORT_SEQ} tag {value!r}") from None

    def log_lineage(self, common: CommonSettings, settings: TrainSettings,
                    source: InputSource) -> None:
        """Tag the run with the source commit, the version and a description; later
        `log_input`s describe `source` (queued)."""
        self.source = source
        self.set_tag(TAG_COMMIT, source_commit())
        self.set_tag(TAG_VERSION, package_version())
        self.set_tag(TAG_NOTE, run_description(common, settings, source))

    def log_input(self, item: ExportInput) -> None:
        """Log `item` as a dataset input of the run (queued; needs `log_lineage` first)."""
        if self.source is None:
            raise TrainError("log_input before log_lineage: the run's input source is unknown")
        if self.outbox is not None:
            self.outbox.put_input(item)
        else:
            self.send_input(item)

    def log_plots(self, points: tuple[WindowPoint, ...]) -> None:
        """Render `points` as the run's `plots/*.png` (queued: rendered in the outbox's thread;
        a newer call replaces a queued older one)."""
        render = partial(render_plots, points)
        if self.outbox is not None:
            self.outbox.put_artifacts(ARTIFACT_DIR, render)
            return
        with tempfile.TemporaryDirectory(prefix="freshrec-plots-") as tmp:
            render(Path(tmp))
            self.send_artifacts(Path(tmp), ARTIFACT_DIR)

    def exports_full(self) -> bool:
        """True when so many exports wait for MLflow that the next one must be skipped."""
        return self.outbox is not None and self.outbox.exports_full()

    def log_export(self, export: ModelExport) -> None:
        """Upload `export` as `exports/<seq:08d>`, then set the tag (queued: spilled first)."""
        if self.outbox is not None:
            self.outbox.put_export(export)
            return
        with tempfile.TemporaryDirectory(prefix="freshrec-export-") as tmp:
            self.send_export(write_export(export, Path(tmp) / "export"), export.export_seq)

    # --- one MLflow request each (the outbox's sink) -----------------------------------
    def send_metrics(self, values: dict[str, float], step: int, timestamp_ms: int) -> None:
        entities: Any = require("mlflow.entities", "train")
        metrics = [entities.Metric(k, float(v), timestamp_ms, step)
                   for k, v in sorted(values.items())]
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)

    def send_tag(self, key: str, value: str) -> None:
        self._client.set_tag(self.run_id, key, value[:5000])

    def send_export(self, directory: Path, export_seq: int) -> None:
        self._client.log_artifacts(self.run_id, str(directory), artifact_path(export_seq))
        self._client.set_tag(self.run_id, TAG_EXPORT_SEQ, str(export_seq))
        if self.notifier is not None:  # never raises: a lost hint costs a publisher poll
            self.notifier.notify(self.run_id, export_seq)

    def send_input(self, item: Any) -> None:
        entities: Any = require("mlflow.entities", "train")
        source = self.source or InputSource()  # log_input checked it is set
        dataset = entities.Dataset(**dataset_fields(source, item))
        tags = [entities.InputTag(DATASET_CONTEXT, "training"),
                entities.InputTag("freshrec.export_seq", str(item.export_seq))]
        self._client.log_inputs(self.run_id, datasets=[entities.DatasetInput(dataset, tags)])

    def send_artifacts(self, directory: Path, artifact_path: str) -> None:
        self._client.log_artifacts(self.run_id, str(directory), artifact_path)

    def finish(self, failed: bool = False) -> None:
        """Send what is queued (at most `flush_s`), then mark the run FINISHED (or FAILED); a
        restart sets it RUNNING again. Never raises for MLflow: an outage is logged."""
        if self.outbox is not None:
            self.outbox.close(self.flush_s)
        try:
            self._client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
        except Exception as exc:  # MLflow away at exit: the run stays RUNNING, logged
            log.warning("could not mark MLflow run %s %s: %s: %s", self.run_id,
                        "FAILED" if failed else "FINISHED", type(exc).__name__, str(exc)[:200])
        if self.notifier is not None:
            self.notifier.close()
