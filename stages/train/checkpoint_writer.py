"""Checkpoints written off the training thread.

A checkpoint used to stop the trainer while the whole table was written, hashed and fsynced
(3.3 s median under load, 30 % of the trainer's time at 10,000 events/s: bench/RESULTS-
capacity.md). Now the trainer only copies its state in memory (`Engine.snapshot`, tens of ms)
and goes on; a thread per rank writes the copy into the checkpoint's staging directory, hashes
and fsyncs its files. After each window the ranks agree whether every writer is done (`settle`,
collective); when they are, rank 0 commits: the checksums and the trainer state, then the
rename that makes `ckpt-<window>` complete (`Checkpoints.commit`).

At most one checkpoint is in flight: one falling due while another is written waits for the
next window after it (the count of windows since the last checkpoint keeps growing, so it is
taken as soon as the writer is free). A trainer killed meanwhile restarts from the newest
committed checkpoint, as before; the half-written staging directory is removed at its start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stages.common.errors import TrainError
from stages.train.checkpoint import ENGINE_DIR, Checkpoints, TrainerState, file_checksums
from stages.train.core.engine_protocol import Engine
from stages.train.ranks import Ranks

log = logging.getLogger(__name__)

# relative path under the checkpoint directory -> {size, sha256}
Checksums = dict[str, dict[str, object]]


@dataclass
class _Write:
    """One rank's write of one checkpoint (the thread's result)."""

    window: int
    state: TrainerState
    started: float
    checksums: Checksums = field(default_factory=dict)
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _write_rank(write: Callable[[Path], None], root: Path, engine_dir: Path, job: _Write) -> None:
    """Thread body: write this rank's files, fsync them, hash them (relative to `root`)."""
    try:
        before = {p for p in engine_dir.rglob("*") if p.is_file()}
        write(engine_dir)
        mine = sorted(p for p in engine_dir.rglob("*") if p.is_file() and p not in before)
        for path in mine:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        job.checksums = file_checksums(root, mine)
    except Exception as exc:  # reported by `settle` on the training thread
        job.error = f"{type(exc).__name__}: {exc}"
    finally:
        job.done.set()


class BackgroundCheckpoints:
    """The checkpoint in flight, if any, of one trainer (every rank holds one)."""

    def __init__(self, checkpoints: Checkpoints, ranks: Ranks, engine: Engine) -> None:
        self.checkpoints = checkpoints
        self.ranks = ranks
        self.engine = engine
        self._job: _Write | None = None
        self._thread: threading.Thread | None = None
        self.committed = 0
        self.last_seconds: float | None = None  # wall time of the last checkpoint, begin->commit

    @property
    def busy(self) -> bool:
        """A checkpoint is being written (the same answer on every rank after `settle`)."""
        return self._job is not None

    def start(self, state: TrainerState) -> None:
        """Begin the checkpoint of `state` (collective): stage, copy the engine's state, and
        leave the writing to a thread. Call only when not `busy`."""
        if self._job is not None:
            raise TrainError("a checkpoint is already being written: settle it first")
        window = state.window
        if self.ranks.rank == 0:
            self.checkpoints.begin(window)
        self.ranks.barrier()  # the staging directory exists before any rank writes into it
        write = self.engine.snapshot()
        job = _Write(window=window, state=state, started=time.monotonic())
        root = self.checkpoints.staging(window)
        self._thread = threading.Thread(
            target=_write_rank, args=(write, root, root / ENGINE_DIR, job),
            name=f"checkpoint-{window}", daemon=True,
        )
        self._job = job
        self._thread.start()

    def settle(self, wait: bool = False) -> Path | None:
        """Commit the checkpoint in flight once every rank's writer is done (collective while
        one is in flight); with `wait`, wait for them. The committed directory on rank 0,
        else None. TrainError when a rank failed to write (nothing is committed)."""
        job = self._job
        if job is None:
            return None
        if wait:
            job.done.wait()
        finished = self.ranks.allgather(
            (job.done.is_set(), job.error, job.checksums if job.done.is_set() else None)
        )
        if not all(done for done, _, _ in finished):
            return None
        self._job = None
        self._thread = None
        errors = [f"rank {r}: {err}" for r, (_, err, _) in enumerate(finished) if err]
        if errors:
            raise TrainError(f"the checkpoint of window {job.window} could not be written "
                             f"({'; '.join(errors)}): is the disk of FRESHREC_CHECKPOINT_DIR "
                             "full or read-only?")
        final = None
        if self.ranks.rank == 0:
            sums: Checksums = {}
            for _, _, part in finished:
                sums.update(part or {})
            final = self.checkpoints.commit(self.checkpoints.staging(job.window), job.state,
                                            checksums=sums)
            self.last_seconds = time.monotonic() - job.started
            log.info("checkpoint %s (written in the background in %.1f s)", final,
                     self.last_seconds)
        self.committed += 1
        return final

    def abandon(self) -> None:
        """The trainer stops on an error: let a running writer finish its files (so that no
        thread writes into a directory the next start removes); nothing is committed."""
        if self._thread is not None:
            self._thread.join()
        self._job = None
        self._thread = None
