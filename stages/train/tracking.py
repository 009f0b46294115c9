"""The trainer's MLflow run: window metrics, missed data, and the model exports.

One run per trainer (per checkpoint directory), tagged `freshrec.role=trainer`; its id is kept
in the checkpoint directory, so a restarted trainer continues the same run. Window metrics are
logged with `step = window number` (a window retrained after a restart logs its step again).
Exports are uploaded as the artifact directory `model_export.artifact_path(seq)`, and only then
is the tag `freshrec.export_seq` set (see `stages.common.model_export`). Only rank 0 tracks.

Lineage: the run carries the source commit (`mlflow.source.git.commit`, MLflow's own tag),
`freshrec.version`, a description (`mlflow.note.content`), the settings as params, and each
export's input as an MLflow dataset (`ExportInput`: the store's namespace, block seqs and stream
ids, or the replay file, its sha256 and rows). Plots go to `plots/`. All of it is queued in the
outbox like the metrics: none of it makes training wait for MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.common.errors import ServiceUnavailable, TrainError, require
from stages.common.model_export import (
    TAG_EXPORT_SEQ, TAG_ROLE, ModelExport, artifact_path, write_export,
)
from stages.common.settings import CommonSettings, redact_text, redact_url
from stages.train.core.report import WindowReport
from stages.train.outbox import OutboxConfig, TrackingOutbox
from stages.train.plots import ARTIFACT_DIR, WindowPoint, render_plots
from stages.train.settings import TrainSettings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

TAG_CONSUMER = "freshrec.consumer"
TAG_COMMIT = "mlflow.source.git.commit"  # MLflow's own: its UI shows it on the run page
TAG_VERSION = "freshrec.version"
TAG_NOTE = "mlflow.note.content"  # MLflow's run description
DATASET_CONTEXT = "mlflow.data.context"  # MLflow's input tag: training / validation / ...
log = logging.getLogger(__name__)


def package_version() -> str:
    """The installed freshrec distribution's version ("unknown" when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("freshrec")
    except PackageNotFoundError:
        return "unknown"


def source_commit() -> str:
    """`git rev-parse HEAD` of the checkout this code runs from, when it is one (and git
    answers within seconds); else the installed package version."""
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                  capture_output=True, text=True, timeout=5, check=False)
            commit = done.stdout.strip()
            if done.returncode == 0 and len(commit) == 40:
                return commit
        except (OSError, subprocess.TimeoutExpired):
            pass  # no git on PATH, or it hangs: fall back to the package version
    return package_version()


def common_params(common: CommonSettings) -> dict[str, Any]:
    """The shared settings that say what a trainer run is about (none of them secret)."""
    return {
        "topic_events": common.topic_events,
        "redis_namespace": common.redis_namespace,
        "model_name": common.model_name,
        "mlflow_experiment": common.mlflow_experiment,
    }


class FileDigest:
    """The sha256 of a file, computed once, on first use (in the outbox's thread, so a large
    file never holds training). None, logged once, when the file cannot be read any more."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._value: str | None = None
        self._done = False
        self._lock = threading.Lock()

    def value(self) -> str | None:
        with self._lock:
            if not self._done:
                self._done = True
                sha = hashlib.sha256()
                try:
                    with self.path.open("rb") as handle:
                        while block := handle.read(1 << 20):
                            sha.update(block)
                    self._value = sha.hexdigest()
                except OSError as exc:
                    log.warning("no sha256 of the replay file in MLflow: %s", exc)
            return self._value


@dataclass(frozen=True)
class InputSource:
    """Where this run's samples come from: a store namespace, or a replay file."""

    namespace: str | None = None
    replay: FileDigest | None = None

    def describe(self) -> str:
        if self.replay is not None:
            return f"a replay of `{self.replay.path}`"
        return f"the Redis feature store, namespace `{self.namespace}`"


@dataclass(frozen=True)
class ExportInput:
    """The samples of one export's windows (since the previous export): windows
    `window_first..window_last`, `samples` rows; block seqs (store) or 1-based file rows
    (replay) `first..last`, inclusive; stream entry ids of the first and last block (store)."""

    export_seq: int
    window_first: int
    window_last: int
    samples: int
    first: int
    last: int
    first_stream_id: str | None = None
    last_stream_id: str | None = None


def dataset_fields(source: InputSource, item: ExportInput) -> dict[str, str]:
    """The MLflow Dataset fields (name, digest, source_type, source, profile) of `item`."""
    profile = {"export_seq": item.export_seq, "windows": [item.window_first, item.window_last],
               "samples": item.samples}
    if source.replay is not None:
        sha = source.replay.value()
        where: dict[str, Any] = {"uri": source.replay.path.as_uri(), "sha256": sha,
                                 "rows": [item.first, item.last]}
        name, source_type = source.replay.path.name, "local"
    else:
        where = {"namespace": source.namespace, "block_seq": [item.first, item.last],
                 "stream_id": [item.first_stream_id, item.last_stream_id]}
        name, source_type = f"redis:{source.namespace}", "redis"
    text = json.dumps(where, sort_keys=True)
    return {"name": name, "digest": hashlib.sha256(text.encode()).hexdigest()[:16],
            "source_type": source_type, "source": text, "profile": json.dumps(profile)}


def run_description(common: CommonSettings, settings: TrainSettings, source: InputSource) -> str:
    """The run's description (markdown): what the run is, its model and its source."""
    spec = settings.model_spec()
    return (
        f"freshrec trainer `{settings.consumer_name}`: online training of a {spec.model_type} "
        f"CTR model (embedding dim {spec.embedding_dim}, hidden units "
        f"{','.join(map(str, spec.hidden_units))}, {settings.optimizer} lr "
        f"{settings.learning_rate}) on windows of {settings.window_samples} samples from "
        f"{source.describe()} (events topic `{common.topic_events}`). An export every "
        f"{settings.export_every} windows under `exports/`, published by the publisher as "
        f"model `{common.model_name}`; window metrics by step = window; plots under `plots/`."
    )


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
