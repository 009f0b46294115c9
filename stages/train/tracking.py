"""The trainer's MLflow run: window metrics, missed data, and the model exports.

One run per trainer (per checkpoint directory), tagged `freshrec.role=trainer`; its id is kept
in the checkpoint directory, so a restarted trainer continues the same run. Window metrics are
logged with `step = window number` (a window retrained after a restart logs its step again).
Exports are uploaded as the artifact directory `model_export.artifact_path(seq)`, and only then
is the tag `freshrec.export_seq` set (see `stages.common.model_export`). Only rank 0 tracks.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.common.errors import ServiceUnavailable, TrainError, require
from stages.common.model_export import (
    TAG_EXPORT_SEQ, TAG_ROLE, ModelExport, artifact_path, write_export,
)
from stages.common.settings import CommonSettings, redact_text, redact_url
from stages.train.core.report import WindowReport
from stages.train.outbox import OutboxConfig, TrackingOutbox
from stages.train.settings import TrainSettings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

TAG_CONSUMER = "freshrec.consumer"
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
                        return cls(client, run_id, outbox, flush_s)
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
            return new
        except exceptions.MlflowException as exc:
            raise ServiceUnavailable(
                f"MLflow at {redact_url(common.mlflow_tracking_uri)} failed ({redact_text(str(exc))}): start it "
                "or set FRESHREC_MLFLOW_TRACKING_URI"
            ) from None

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
