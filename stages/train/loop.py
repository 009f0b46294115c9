"""The resident trainer: windows of samples, progressive validation, checkpoints, exports.

For each window (see `core.window.WindowPolicy`): score it with the current model (progressive
validation), then train on it, in mini-batches that grow while samples wait in the store
(`core.batch_policy`); print one line and log the metrics to MLflow (rank 0). Every K windows
the engine state and the trainer's position are checkpointed atomically, written off the
training thread (`checkpoint_writer`); every E windows the model is exported to MLflow. At start the newest checkpoint is restored, so a trainer killed
at any moment (even SIGKILL) continues exactly after the last checkpointed window: the windows
trained after it are read again from the store and retrained from the restored model, so every
sample is in the model's state exactly once. Exports continue the sequence numbers published
(the run's `freshrec.export_seq` tag), and the first export after a start is full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from stages.common.errors import TrainError
from stages.common.schema import FeatureSchema
from stages.common.settings import CommonSettings
from stages.train.checkpoint import ENGINE_DIR, Checkpoints, TrainerState, check_schema
from stages.train.core.engine_protocol import Engine, EngineConfig
from stages.train.ranks import Ranks, ranks_of
from stages.train.settings import TrainSettings
from stages.train.sources import Chunk, Source, StoreSource
from stages.train.tracking import FileDigest, InputSource, TrainerTracking, common_params
from stages.train.trainer import TrainSummary, WindowTrainer

log = logging.getLogger(__name__)
EngineFactory = Callable[[EngineConfig], Engine]


def default_engine(config: EngineConfig) -> Engine:
    """The TensorFlow engine (imported here, so importing the loop loads no TensorFlow)."""
    from stages.train.engine import TFEngine

    engine: Engine = TFEngine(config)
    return engine


def _restore(
    engine: Engine, ranks: Ranks, checkpoints: Checkpoints, schema: FeatureSchema
) -> TrainerState:
    if ranks.rank == 0:
        checkpoints.clean_stale()
    ranks.barrier()
    latest = checkpoints.latest()
    if latest is None:
        return TrainerState(world_size=ranks.size, feature_schema=schema.schema_id)
    path, state = latest
    check_schema(path, state, schema)
    if state.world_size != ranks.size:
        raise TrainError(
            f"checkpoint {path} was written by {state.world_size} ranks, this job has "
            f"{ranks.size}: run with -np {state.world_size}"
        )
    engine.restore(path / ENGINE_DIR)
    log.info("restored %s: window %d, %d samples", path, state.window, state.samples)
    return replace(state, feature_schema=schema.schema_id)


def run_trainer(
    common: CommonSettings,
    settings: TrainSettings,
    *,
    replay: Path | None = None,
    max_windows: int | None = None,
    stop: threading.Event | None = None,
    engine_factory: EngineFactory | None = None,
    out: Callable[[str], None] = print,
) -> TrainSummary:
    """Run the trainer until `stop` is set, `max_windows` windows were trained in this call, or
    (with `replay`) the file is done. Restores the newest checkpoint first; on a clean end,
    exports and checkpoints what was trained since the last ones. Every Horovod rank calls it.
    A window left open at a stop is dropped (not trained, and re-read after a restart).
    """
    if max_windows is not None and max_windows < 1:
        raise TrainError(f"max_windows must be >= 1, got {max_windows}")
    schema = common.schema()
    engine = (engine_factory or default_engine)(settings.engine_config(schema))
    ranks = ranks_of(engine.rank, engine.size)
    checkpoints = Checkpoints(common.checkpoints, settings.checkpoints_kept)
    if ranks.rank == 0:
        checkpoints.lock()  # one trainer per checkpoint directory
    try:
        state = _restore(engine, ranks, checkpoints, schema)
        tracking = None
        if ranks.rank == 0:
            tracking = TrainerTracking.open(
                common,
                state.run_id or checkpoints.read_run_id(),
                settings.consumer_name,
                {**settings.model_dump(), "world_size": ranks.size, **common_params(common)},
                settings,
            )
            tracking.log_lineage(common, settings, _input_source(common, replay))
            if tracking.run_id != checkpoints.read_run_id():
                checkpoints.write_run_id(tracking.run_id)
            state = replace(state, run_id=tracking.run_id, export_seq=_export_seq(state, tracking))
        state = ranks.broadcast(state)
        source = _open_source(common, settings, state, replay)
        trainer = WindowTrainer(settings, engine, ranks, checkpoints, state, tracking, out)
        failed = True
        try:
            _start_metrics(trainer, source, settings)
            _note_store_resets(trainer, source)
            _window_loop(trainer, source, settings, replay is not None, max_windows, stop)
            if trainer.since_export:
                trainer.export()
            trainer.finish_checkpoints()
            failed = False
        finally:
            if failed:
                trainer.background.abandon()
            if trainer.metrics is not None:
                trainer.metrics.close()
            source.close()
            if tracking is not None:
                trainer.plot()  # the final plots, queued before the flush
                tracking.finish(failed=failed)  # never raises for MLflow (logged)
        return TrainSummary(
            windows=trainer.windows,
            samples=trainer.samples,
            last_window=trainer.state.window,
            export_seq=trainer.state.export_seq,
            missed_blocks=trainer.missed_total,
            run_id=trainer.state.run_id,
            last_report=trainer.last_report,
            store_resets=getattr(source, "resets", 0),
        )
    finally:
        checkpoints.unlock()


def _export_seq(state: TrainerState, tracking: TrainerTracking) -> int:
    """Where the export sequence continues: after the last export uploaded (the run's tag) or
    still spilled in the outbox, which `tracking.start()` queues first. A checkpoint naming a
    later export means those exports were lost with the outbox: their numbers are used again
    (the next export is full), since a gap would stop the publisher."""
    last = tracking.start()
    if state.export_seq > last:
        log.warning("exports %d..%d of the checkpoint were never uploaded and are not in the "
                    "outbox: the next export (full) is %d", last + 1, state.export_seq, last + 1)
    return last


def _input_source(common: CommonSettings, replay: Path | None) -> InputSource:
    if replay is not None:
        return InputSource(replay=FileDigest(replay.resolve()))
    return InputSource(namespace=common.redis_namespace)


def _start_metrics(trainer: WindowTrainer, source: Source, settings: TrainSettings) -> None:
    """With FRESHREC_TRAIN_METRICS_PORT, rank 0 serves Prometheus metrics. Every rank then
    counts the table once (collective), so the first window's admissions are known."""
    if settings.metrics_port is None:
        return
    trainer.table_before = trainer.engine.table_size()
    if trainer.ranks.rank != 0:
        return
    from stages.train.prom import TrainerMetrics

    metrics = TrainerMetrics({
        "consumer": settings.consumer_name, "model_type": settings.model_type,
        "source": "store" if isinstance(source, StoreSource) else "replay",
    })
    if trainer.tracking is not None:
        metrics.watch_outbox(trainer.tracking.outbox)
    if isinstance(source, StoreSource):
        store = source.store
        metrics.track_backlog(lambda: store.last_seq() - trainer.state.store.seq)
    metrics.serve(settings.metrics_port)
    trainer.metrics = metrics
    log.info("trainer metrics at http://127.0.0.1:%d/metrics", settings.metrics_port)


def _open_source(
    common: CommonSettings, settings: TrainSettings, state: TrainerState, replay: Path | None
) -> Source:
    if replay is not None:
        from stages.train.replay import ReplaySource

        resumed = state.replay_file == str(replay.resolve())
        return ReplaySource(
            replay,
            skip_lines=state.replay_rows if resumed else 0,
            chunk_rows=min(4096, settings.window_samples),
            schema=common.schema(),
            embedding_dim=settings.embedding_dim,
        )
    from stages.train.store import SampleReader

    return StoreSource(SampleReader.from_settings(common), state.store, settings.read_count)


def _window_size(chunks: list[Chunk], max_samples: int) -> int:
    """How many leading chunks make a full window (rows >= max_samples); 0 if not enough."""
    rows = 0
    for i, chunk in enumerate(chunks):
        rows += len(chunk.samples)
        if rows >= max_samples:
            return i + 1
    return 0


def _window_loop(
    trainer: WindowTrainer,
    source: Source,
    settings: TrainSettings,
    is_replay: bool,
    max_windows: int | None,
    stop: threading.Event | None,
) -> None:
    """Rank 0 reads and decides (how many queued chunks close a window, whether to end); the
    decision is broadcast and every rank reads the same chunks and trains the same windows."""
    policy = settings.window_policy(replay=is_replay)
    batches = settings.batch_policy()
    ranks = trainer.ranks
    queue: list[Chunk] = []
    first_at: float | None = None
    while True:
        decision: dict[str, Any] = {}
        new: list[Chunk] = []
        if ranks.rank == 0:
            stopping = stop is not None and stop.is_set()
            queued = sum(len(c.samples) for c in queue)
            if not stopping and queued < policy.max_samples and not source.exhausted:
                new = source.poll(policy.wait_seconds(queued, first_at, time.monotonic()))
            candidates = queue + new
            rows = sum(len(c.samples) for c in candidates)
            now = time.monotonic()
            if rows and first_at is None:
                first_at = now
            take = _window_size(candidates, policy.max_samples)
            if not take and rows and (
                policy.should_close(rows, first_at, now) or source.exhausted
            ):
                take = len(candidates)
            if stopping:
                take = 0
            last = max_windows is not None and take > 0 and trainer.windows + 1 >= max_windows
            end = stopping or last or (source.exhausted and rows == 0)
            batch = None
            if take:
                batch, change = batches.next(_backlog(source, candidates, take))
                if change:
                    log.info("%s", change)
            decision = {"token": new[-1].token if new else None, "take": take, "end": end,
                        "batch": batch}
        decision = ranks.broadcast(decision)
        if ranks.rank != 0 and decision["token"] is not None:
            new = source.fetch_until(decision["token"])
        for chunk in new:
            if chunk.gaps:
                _report_gaps(trainer, source, chunk)
        queue.extend(new)
        _note_store_resets(trainer, source)
        if decision["take"]:
            trainer.train_window(queue[: decision["take"]], source, decision["batch"])
            queue = queue[decision["take"]:]
            first_at = time.monotonic() if any(len(c.samples) for c in queue) else None
        if decision["end"]:
            return


def _backlog(source: Source, candidates: list[Chunk], take: int) -> int | None:
    """Samples waiting after the window of `candidates[:take]`: the chunks read after it and
    the blocks the store holds beyond the last one read (at the window's samples per block).
    None for a replay (a file has no backlog to adapt to)."""
    if not isinstance(source, StoreSource) or not candidates:
        return None
    window = candidates[:take]
    per_block = sum(len(c.samples) for c in window) / max(
        sum(c.last_seq - c.first_seq + 1 for c in window), 1)
    queued = sum(len(c.samples) for c in candidates[take:])
    unread = max(source.store.last_seq() - candidates[-1].last_seq, 0)
    return queued + int(unread * per_block)


def _note_store_resets(trainer: WindowTrainer, source: Source) -> None:
    """Count a feature-store reset in MLflow (metric `store_resets` at the window about to be
    trained, tag `freshrec.store_reset` with the reason); rank 0 tracks."""
    resets = getattr(source, "resets", 0)
    if resets <= trainer.store_resets_noted or trainer.ranks.rank != 0:
        return
    if trainer.metrics is not None:
        trainer.metrics.store_resets.inc(resets - trainer.store_resets_noted)
    trainer.store_resets_noted = resets
    if trainer.tracking is not None:
        trainer.tracking.log_metrics({"store_resets": float(resets)}, trainer.state.window + 1)
        trainer.tracking.set_tag("freshrec.store_reset", str(getattr(source, "last_reset", "")))


def _report_gaps(trainer: WindowTrainer, source: Source, chunk: Chunk) -> None:
    """Log missed blocks and record them in the store (rank 0). The trainer counts them in its
    state when the window holding `chunk` is trained, so a retrained window counts them once."""
    if trainer.ranks.rank != 0:
        return
    for gap in chunk.gaps:
        log.warning(
            "missed sample blocks %d..%d (%d): trimmed from the store before the trainer "
            "read them; raise the store retention or train faster",
            gap.first, gap.last, gap.blocks,
        )
    if isinstance(source, StoreSource):
        source.store.report_gaps(chunk.gaps, trainer.settings.consumer_name)
