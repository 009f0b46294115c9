"""Rank 0's bounded queue between the trainer and MLflow, so that training never waits on it.

Window metrics, tags, exports, dataset inputs and rendered artifacts (the plots) are put here
and sent, in the order they were put, by one background thread. Exports are spilled to `<directory>/<seq:08d>/` (`write_export`, manifest
last) before they are queued, so a trainer killed while MLflow is away uploads them after its
restart (`recover`). An export is uploaded, then the run tag `freshrec.export_seq` is set, then
its directory is deleted: the tag never names an export that is not there.

Failures: an outage (the server does not answer, times out, or answers 5xx) is retried for as
long as it lasts, the same item first, with capped exponential backoff; the queue is bounded, so
memory is too. Any other error (MLflow refused the request) is retried `max_attempts` times,
then a metric or tag is dropped (logged, counted); an export is never dropped, since the
publisher needs every sequence number, so a refused export keeps the queue waiting (logged
every time) and the trainer skips further exports once `max_exports` are pending.

Bounds: at most `max_exports` exports pending (`exports_full()` tells the trainer to skip its
export, counted by the caller), at most `max_records` metric and tag records (the oldest is
dropped and counted). An artifact record is rendered in the sender thread (never the
trainer's) and replaces a queued one of the same artifact path, since only the newest matters;
a render that fails drops its record (logged, counted). The counters are read by the trainer and
logged as metrics.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stages.common.model_export import MANIFEST, ModelExport, write_export

log = logging.getLogger(__name__)

RUN_FILE = "run_id"
# MlflowException error codes of a request MLflow refused (retrying cannot help): anything
# else, or an error without a code (connection refused, a timeout), counts as an outage.
REFUSED_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST", "ENDPOINT_NOT_FOUND",
})


class TrackingSink(Protocol):
    """Where the outbox sends (TrainerTracking's MLflow calls). Each call is one attempt."""

    def send_metrics(self, values: dict[str, float], step: int, timestamp_ms: int) -> None: ...

    def send_tag(self, key: str, value: str) -> None: ...

    def send_export(self, directory: Path, export_seq: int) -> None: ...

    def send_input(self, item: Any) -> None: ...

    def send_artifacts(self, directory: Path, artifact_path: str) -> None: ...


@dataclass(frozen=True)
class OutboxConfig:
    """Bounds and retry timing of a TrackingOutbox."""

    directory: Path
    max_exports: int = 20
    max_records: int = 10_000
    max_attempts: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0


@dataclass(frozen=True)
class MetricsRecord:
    values: dict[str, float]
    step: int
    timestamp_ms: int


@dataclass(frozen=True)
class TagRecord:
    key: str
    value: str


@dataclass(frozen=True)
class ExportRecord:
    seq: int
    directory: Path


@dataclass(frozen=True)
class InputRecord:
    """One dataset input of the run (what `item` is, the sink knows)."""

    item: Any


@dataclass(frozen=True)
class ArtifactRecord:
    """Files `render(directory)` writes into an empty directory, uploaded as `artifact_path`."""

    artifact_path: str
    render: Callable[[Path], object]


Record = MetricsRecord | TagRecord | ExportRecord | InputRecord | ArtifactRecord


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says the server is away (retry while it lasts), False when MLflow
    answered and refused the request (see REFUSED_CODES)."""
    return getattr(exc, "error_code", None) not in REFUSED_CODES


class TrackingOutbox:
    """Thread-safe; `start()` the sender, `close()` to flush. Counters: `failures` (attempts
    that failed), `dropped` (metric/tag records given up), `uploaded_exports`."""

    def __init__(
        self, sink: TrackingSink, config: OutboxConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.config = config
        self._clock = clock
        self._queue: deque[Record] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None
        self._queued_in_outage = 0
        self.failures = 0
        self.dropped = 0
        self.uploaded_exports = 0
        self.last_uploaded_seq = 0

    # --- the trainer's side -----------------------------------------------------------
    def recover(self, run_id: str, uploaded_seq: int) -> int:
        """Queue the exports a previous process spilled for run `run_id` and did not upload
        (seq > `uploaded_seq`, complete ones, in order); delete the rest (uploaded, incomplete,
        or of another run). Returns the last export seq uploaded or queued. Call before start."""
        root = self.config.directory
        root.mkdir(parents=True, exist_ok=True)
        marker = root / RUN_FILE
        if marker.is_file() and marker.read_text().strip() != run_id:
            log.warning("discarding the export outbox %s: it belongs to MLflow run %s, not %s",
                        root, marker.read_text().strip(), run_id)
            self._clear(root)
        marker.write_text(run_id)
        self.last_uploaded_seq = uploaded_seq
        last = uploaded_seq
        for path in sorted(p for p in root.iterdir() if p.is_dir()):
            seq = int(path.name) if path.name.isdigit() else 0
            if seq <= uploaded_seq or not (path / MANIFEST).is_file() or seq != last + 1:
                shutil.rmtree(path, ignore_errors=True)  # uploaded, incomplete, or no chain
                continue
            self._queue.append(ExportRecord(seq, path))
            last = seq
        if last > uploaded_seq:
            log.info("export outbox: %d export(s) %d..%d from before the restart to upload",
                     last - uploaded_seq, uploaded_seq + 1, last)
        return last

    def start(self) -> None:
        """Start the sender thread (a daemon: a trainer that exits never waits on it)."""
        self._thread = threading.Thread(target=self._run, name="tracking-outbox", daemon=True)
        self._thread.start()

    def put_metrics(self, values: dict[str, float], step: int) -> None:
        """Queue one batch of metrics at `step`, stamped now."""
        self._put(MetricsRecord(dict(values), step, int(time.time() * 1000)))

    def put_tag(self, key: str, value: str) -> None:
        self._put(TagRecord(key, value))

    def put_input(self, item: Any) -> None:
        """Queue one dataset input (`sink.send_input(item)`)."""
        self._put(InputRecord(item))

    def put_artifacts(self, artifact_path: str, render: Callable[[Path], object]) -> None:
        """Queue files to render (in the sender thread) and upload as `artifact_path`; replaces
        a queued, not yet started record of the same path."""
        with self._cond:
            for i, old in enumerate(self._queue):
                if i > 0 and isinstance(old, ArtifactRecord) and old.artifact_path == artifact_path:
                    self._queue[i] = ArtifactRecord(artifact_path, render)
                    return
        self._put(ArtifactRecord(artifact_path, render))

    def exports_full(self) -> bool:
        """True when `max_exports` exports wait: the trainer must skip its next export."""
        return self.pending_exports() >= self.config.max_exports

    def put_export(self, export: ModelExport) -> None:
        """Spill `export` to `<directory>/<seq:08d>/` and queue its upload. Sequence numbers
        must follow each other (a gap would stop the publisher); ValueError otherwise."""
        with self._cond:
            queued = [r.seq for r in self._queue if isinstance(r, ExportRecord)]
            last = queued[-1] if queued else self.last_uploaded_seq
        if export.export_seq != last + 1:
            raise ValueError(f"export {export.export_seq} does not follow export {last}")
        path = self.config.directory / f"{export.export_seq:08d}"
        shutil.rmtree(path, ignore_errors=True)
        write_export(export, path)
        self._put(ExportRecord(export.export_seq, path))

    def backlog(self) -> int:
        """Records (metrics, tags, exports) not sent yet."""
        with self._cond:
            return len(self._queue)

    def pending_exports(self) -> int:
        with self._cond:
            return sum(isinstance(r, ExportRecord) for r in self._queue)

    def close(self, timeout_s: float) -> int:
        """Send what is queued, waiting at most `timeout_s`; returns the records left (the
        exports among them stay spilled for the next start)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._abandon.set()
        with self._cond:
            self._cond.notify_all()
        left = self.backlog()
        if left:
            log.warning("MLflow tracking: %d record(s) not sent at exit (%d export(s) stay in "
                        "%s for the next start)", left, self.pending_exports(),
                        self.config.directory)
        return left

    def _put(self, record: Record) -> None:
        with self._cond:
            if not isinstance(record, ExportRecord):
                small = sum(not isinstance(r, ExportRecord) for r in self._queue)
                if small >= self.config.max_records:
                    self._drop_oldest_record()
            self._queue.append(record)
            if self._down_since is not None:
                self._queued_in_outage += 1
            self._cond.notify_all()

    def _drop_oldest_record(self) -> None:
        for i, old in enumerate(self._queue):
            if not isinstance(old, ExportRecord) and i > 0:  # the head may be in flight
                del self._queue[i]
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("MLflow tracking queue full (%d records): dropped the oldest "
                                "metric/tag record (%d dropped so far)",
                                self.config.max_records, self.dropped)
                return

    # --- the sender thread -------------------------------------------------------------
    def _run(self) -> None:
        attempts = 0
        while not self._abandon.is_set():
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                record = self._queue[0]
            try:
                self._send(record)
            except Exception as exc:  # the MLflow client raises MlflowException, requests', OSError
                self.failures += 1
                attempts += 1
                if not self._failed(record, exc, attempts):
                    continue
                attempts = 0
                self._pop(record)
                continue
            attempts = 0
            self._pop(record)
            if isinstance(record, ExportRecord):
                shutil.rmtree(record.directory, ignore_errors=True)
            self._back_up()

    def _send(self, record: Record) -> None:
        if isinstance(record, MetricsRecord):
            self.sink.send_metrics(record.values, record.step, record.timestamp_ms)
        elif isinstance(record, TagRecord):
            self.sink.send_tag(record.key, record.value)
        elif isinstance(record, InputRecord):
            self.sink.send_input(record.item)
        elif isinstance(record, ArtifactRecord):
            self._send_artifacts(record)
        else:
            self.sink.send_export(record.directory, record.seq)

    def _send_artifacts(self, record: ArtifactRecord) -> None:
        with tempfile.TemporaryDirectory(prefix="freshrec-artifacts-") as tmp:
            try:
                record.render(Path(tmp))
            except Exception as exc:  # a bug of the renderer: retrying cannot help
                self.dropped += 1
                log.error("could not render %s, not uploaded: %s: %s", record.artifact_path,
                          type(exc).__name__, str(exc)[:200])
                return
            self.sink.send_artifacts(Path(tmp), record.artifact_path)

    def _failed(self, record: Record, exc: Exception, attempts: int) -> bool:
        """Log the failure and wait before the next attempt. True when `record` is given up."""
        reason = f"{type(exc).__name__}: {str(exc)[:200]}"
        if is_outage(exc):
            if self._down_since is None:
                self._down_since = self._clock()
                self._queued_in_outage = 0
                log.warning("MLflow is unreachable (%s); training goes on, tracking and "
                            "exports are queued (%d waiting)", reason, self.backlog())
        elif isinstance(record, ExportRecord) or attempts < self.config.max_attempts:
            log.error("MLflow refused %s (attempt %d): %s", _what(record), attempts, reason)
        else:
            self.dropped += 1
            log.error("MLflow refused %s %d times, dropped: %s", _what(record), attempts, reason)
            return True
        delay = min(self.config.backoff_s * 2 ** min(attempts - 1, 16), self.config.backoff_max_s)
        self._abandon.wait(delay)
        return False

    def _pop(self, record: Record) -> None:
        with self._cond:
            if self._queue and self._queue[0] is record:
                self._queue.popleft()
            if isinstance(record, ExportRecord):
                self.uploaded_exports += 1
                self.last_uploaded_seq = record.seq

    def _back_up(self) -> None:
        if self._down_since is None:
            return
        log.warning("MLflow is back after %.1f s: %d record(s) were queued meanwhile, %d "
                    "still waiting (%d export(s)); %d failed attempts so far",
                    self._clock() - self._down_since, self._queued_in_outage, self.backlog(),
                    self.pending_exports(), self.failures)
        self._down_since = None

    @staticmethod
    def _clear(root: Path) -> None:
        for path in root.iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def _what(record: Record) -> str:
    if isinstance(record, ExportRecord):
        return f"the upload of export {record.seq}"
    if isinstance(record, TagRecord):
        return f"the tag {record.key}"
    if isinstance(record, InputRecord):
        return "a dataset input"
    if isinstance(record, ArtifactRecord):
        return f"the artifacts {record.artifact_path}"
    return f"the metrics of step {record.step}"
