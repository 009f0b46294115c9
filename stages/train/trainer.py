"""Training one window at a time: predict, train, report, export, checkpoint (all ranks).

`WindowTrainer` holds the trainer's state between windows; the loop in `loop.py` decides when a
window closes and hands it the window's chunks. Collective methods must be called by every rank.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.common.errors import TrainError
from stages.common.export_meta import ExportMeta, ProgressiveMetrics, ReplayRange, StoreRange
from stages.common.model_export import non_finite
from stages.common.samples import SampleBatch
from stages.train.checkpoint import Checkpoints, TrainerState
from stages.train.checkpoint_writer import BackgroundCheckpoints
from stages.train.core.engine_protocol import Engine
from stages.train.core.metrics import window_metrics
from stages.train.core.report import WindowReport
from stages.train.plots import WindowHistory
from stages.train.ranks import Ranks
from stages.train.settings import TrainSettings
from stages.train.sources import Chunk, Source
from stages.train.tracking import ExportInput, TrainerTracking

if TYPE_CHECKING:
    from stages.train.prom import TrainerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSummary:
    """What one `run_trainer` call did. windows/samples: trained in this call;
    last_window: the window counter at the end (continues across restarts)."""

    windows: int
    samples: int
    last_window: int
    export_seq: int
    missed_blocks: int
    run_id: str | None
    last_report: WindowReport | None
    store_resets: int = 0  # feature-store resets noticed (Redis came back empty)


class WindowTrainer:
    """The state of one run_trainer call (rank-aware). Rank 0 alone tracks and prints."""

    def __init__(
        self,
        settings: TrainSettings,
        engine: Engine,
        ranks: Ranks,
        checkpoints: Checkpoints,
        state: TrainerState,
        tracking: TrainerTracking | None,
        out: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.ranks = ranks
        self.checkpoints = checkpoints
        self.state = state
        self.tracking = tracking
        self.out = out
        self.exports_this_run = 0
        self.refused_exports = 0  # exports with NaN/inf weights, never uploaded
        self.skipped_exports = 0  # exports not made while MLflow held too many (outbox full)
        self.store_resets_noted = 0  # feature-store resets already counted in MLflow
        self.windows = 0
        self.samples = 0
        self.missed_total = 0  # blocks missed in the windows of this call
        self.since_checkpoint = 0
        self.since_export = 0
        self.background = BackgroundCheckpoints(checkpoints, ranks, engine)
        self.checkpoint_started = time.monotonic()  # a restart restored a checkpoint just now
        self.export_started = -math.inf  # the first export is due at once
        self.last_report: WindowReport | None = None
        # Newest event time trained on in this call (ms); exported for freshness measurements.
        self.max_event_time_ms: int | None = None
        # Rank 0's observers: the plots' history, Prometheus (set by the loop when enabled).
        self.history = WindowHistory(settings.plot_history)
        self.metrics: TrainerMetrics | None = None
        self.table_before: int | None = None  # admitted ids before the next window
        # The input of the next export: the first block seq/row and stream id, and the rows.
        self._input_first: tuple[int, str | None] = (0, None)
        self._input_samples = 0

    def train_window(self, chunks: list[Chunk], source: Source,
                     batch_size: int | None = None) -> None:
        """Predict, train, report one window (collective); then export and checkpoint when due.
        Blocks missed just before the window's blocks count for this window. `chunks` is not
        empty (the loop closes a window on at least one chunk; a chunk may hold 0 rows)."""
        if not chunks:
            raise TrainError("a window needs at least one chunk: close windows on queued chunks")
        missed = sum(g.blocks for c in chunks for g in c.gaps)
        batch = SampleBatch.concat([c.samples for c in chunks])
        if len(batch):
            newest = int(batch.event_time_ms.max())
            self.max_event_time_ms = max(newest, self.max_event_time_ms or newest)
        share = batch.take(slice(self.ranks.rank, None, self.ranks.size))
        started = time.monotonic()
        preds = self.engine.predict(share)
        result = self.engine.train(share, batch_size)
        seconds = time.monotonic() - started
        gathered = self.ranks.allgather(
            (share.label, np.asarray(preds, dtype=np.float64), result.loss, result.samples)
        )
        labels = np.concatenate([g[0] for g in gathered])
        scores = np.concatenate([g[1] for g in gathered])
        trained = sum(g[3] for g in gathered)
        loss = (
            sum(g[2] * g[3] for g in gathered if g[3]) / trained if trained else math.nan
        )
        window = self.state.window + 1
        report = WindowReport(
            window=window,
            first_seq=chunks[0].first_seq,
            last_seq=chunks[-1].last_seq,
            metrics=window_metrics(labels, scores),
            train_loss=float(loss),
            seconds=seconds,
            samples_per_second=len(batch) / seconds if seconds > 0 else math.nan,
            table_size=result.table_size,
            evicted=result.evicted,
            missed_blocks=missed,
            batch_size=batch_size or self.settings.batch_size,
        )
        self.state = replace(
            self.state,
            window=window,
            samples=self.state.samples + len(batch),
            missed_blocks=self.state.missed_blocks + missed,
            **source.checkpoint_fields(chunks[-1]),
        )
        self.windows += 1
        self.missed_total += missed
        self.samples += len(batch)
        self.since_checkpoint += 1
        if not self.since_export:
            after = chunks[0].store_after
            self._input_first = (chunks[0].first_seq, after.stream_id if after else None)
            self._input_samples = 0
        self._input_samples += len(batch)
        self.since_export += 1
        self.last_report = report
        if self.ranks.rank == 0:
            self._observe(report)
            self.out(report.line())
            if self.tracking is not None:
                self.tracking.log_window(report, self.state.missed_blocks)
                if self.settings.plot_every and window % self.settings.plot_every == 0:
                    self.plot()
        if window % self.settings.export_every == 0 and self._export_due():
            self.export()
        self.background.settle()
        if self._checkpoint_due():
            self.checkpoint(wait=False)

    def _observe(self, report: WindowReport) -> None:
        """Rank 0: the plots' history and the Prometheus series (no I/O)."""
        self.history.add(report)
        before, self.table_before = self.table_before, report.table_size
        if self.metrics is not None:
            admitted = report.table_size - before + report.evicted if before is not None else 0
            self.metrics.observe_window(report, admitted)

    def plot(self) -> None:
        """Queue the plots of the windows so far (rank 0 with tracking; rendered off-thread)."""
        if self.tracking is not None and len(self.history):
            self.tracking.log_plots(self.history.snapshot())

    def export(self) -> None:
        """Export (collective). Full when it is the first of this run or every F-th. Skipped
        (logged, counted) while `tracking_max_exports` exports wait for MLflow: the windows
        stay in the next export, which is a delta from the last one queued."""
        backlog_full = self.tracking is not None and self.tracking.exports_full()
        if self.ranks.broadcast(backlog_full):
            self.skipped_exports += 1
            if self.metrics is not None:
                self.metrics.exports_skipped.inc()
            if self.ranks.rank == 0:
                log.warning("export at window %d skipped: %d exports already wait for MLflow "
                            "(%d skipped so far)", self.state.window,
                            self.settings.tracking_max_exports, self.skipped_exports)
                if self.tracking is not None:
                    self.tracking.log_metrics(
                        {"exports_skipped": float(self.skipped_exports)}, self.state.window)
            return
        seq = self.state.export_seq + 1
        self.export_started = time.monotonic()
        full = self.exports_this_run == 0 or (
            seq - self.state.last_full_seq >= self.settings.full_export_every
        )
        meta = self._export_meta().to_dict()
        exported = self.engine.export(seq, full, meta)
        refused: str | None = None
        if self.ranks.rank == 0:
            if exported is None:
                raise TrainError("the engine returned no export on rank 0")
            refused = non_finite(exported)
            if refused is None:
                if self.tracking is not None:
                    self.tracking.log_export(exported)  # queued, spilled to the state dir
                    if self.tracking.source is not None:
                        self.tracking.log_input(self._export_input(seq))
                if self.metrics is not None:
                    self.metrics.exports.inc()
                log.info("export %d (%s) at window %d", seq, exported.kind, self.state.window)
        refused = self.ranks.broadcast(refused)
        self.since_export = 0
        if refused is not None:
            # Not uploaded: the next export must be full, since no delta can skip this one.
            self.refused_exports += 1
            self.exports_this_run = 0
            if self.metrics is not None:
                self.metrics.exports_refused.inc()
            if self.ranks.rank == 0:
                log.error("export %d at window %d refused, not uploaded: %s; the model "
                          "diverged (lower FRESHREC_TRAIN_LEARNING_RATE)", seq,
                          self.state.window, refused)
            return
        self.state = replace(
            self.state, export_seq=seq, last_full_seq=seq if full else self.state.last_full_seq
        )
        self.exports_this_run += 1

    def _export_input(self, seq: int) -> ExportInput:
        """What export `seq` was trained on since the previous export (its dataset input)."""
        state = self.state
        last_id = state.store.stream_id if state.replay_file is None else None
        return ExportInput(
            export_seq=seq,
            window_first=max(state.window - self.since_export + 1, 0),
            window_last=state.window,
            samples=self._input_samples,
            first=self._input_first[0],
            last=state.replay_rows if state.replay_file is not None else state.store.seq,
            first_stream_id=self._input_first[1],
            last_stream_id=last_id,
        )

    def _export_meta(self) -> ExportMeta:
        """The export contract's meta: windows since the previous export, where they came from,
        the last window's progressive metrics."""
        state = self.state
        first = state.window - self.since_export + 1 if self.since_export else state.window
        if state.replay_file is not None:
            where: dict[str, Any] = {
                "replay": ReplayRange(file=state.replay_file, rows=state.replay_rows)
            }
        else:
            where = {"store": StoreRange(stream_id=state.store.stream_id, seq=state.store.seq)}
        return ExportMeta(
            window_first=max(first, 0),
            window_last=state.window,
            samples=state.samples,
            metrics=_progressive(self.last_report),
            max_event_time_ms=self.max_event_time_ms,
            **where,
        )

    def checkpoint(self, wait: bool = True) -> None:
        """Checkpoint the state as of now (collective): the engine's state is copied and
        written by a thread (`checkpoint_writer`), committed after a later window once every
        rank has written it; with `wait`, committed before returning (a checkpoint still in
        flight is committed first)."""
        if wait or self.background.busy:
            self.background.settle(wait=True)
        self.background.start(self.state)
        self.checkpoint_started = time.monotonic()
        self.since_checkpoint = 0
        if wait:
            self.background.settle(wait=True)

    def _export_due(self) -> bool:
        """The minimum interval since the last export has passed (rank 0's clock decides)."""
        elapsed = time.monotonic() - self.export_started
        return bool(self.ranks.broadcast(elapsed >= self.settings.export_min_interval_s))

    def _checkpoint_due(self) -> bool:
        """K windows and the minimum interval since the last checkpoint began, none in flight
        (the same answer on every rank: rank 0's clock decides)."""
        if self.since_checkpoint < self.settings.checkpoint_every or self.background.busy:
            return False
        elapsed = time.monotonic() - self.checkpoint_started
        return bool(self.ranks.broadcast(elapsed >= self.settings.checkpoint_min_interval_s))

    def finish_checkpoints(self) -> None:
        """At a clean end: commit the checkpoint in flight, then checkpoint what was trained
        since it (collective)."""
        self.background.settle(wait=True)
        if self.since_checkpoint:
            self.checkpoint()


def _progressive(report: WindowReport | None) -> ProgressiveMetrics:
    if report is None:
        return ProgressiveMetrics(samples=0, positives=0)
    m = report.metrics

    def finite(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    return ProgressiveMetrics(
        samples=m.samples,
        positives=m.positives,
        auc=finite(m.auc),
        logloss=finite(m.logloss),
        ne=finite(m.ne),
        calibration=finite(m.calibration),
    )
