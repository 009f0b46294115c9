"""Resuming a file source: read its saved position, send only the rest, keep the position.

`FileResume` is used by `run_ingest` for a file read once (not stdin, synthetic or --loop):

    resume = FileResume.open(path, common, settings, from_start=...)
    batches = resume.batches(...)          # the lines after the acknowledged ones
    per batch: resume.checkpoint(producer, stop, now) before sending, resume.handed(prepared)
    at the end: resume.finish(producer)    # after producer.close()

Event ids do not change on a resume (`<file tag>:<line - 1>`), so a consumer can drop the
lines a SIGKILL makes ingest send twice (those after the last saved position).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from stages.common.settings import CommonSettings
from stages.ingest.core.position import AckedPosition, AckTracker, SeekPoint
from stages.ingest.core.prepare import PreparedBatch
from stages.ingest.kafka import CountingProducer
from stages.ingest.position import (
    FileIdentity,
    IngestPosition,
    acked_of,
    load_position,
    position_file,
    save_position,
)
from stages.ingest.settings import IngestSettings
from stages.ingest.sources import FileStart, SourceBatch, file_batches

log = logging.getLogger(__name__)
_SAVE_GAP_S = 0.1  # at most 10 saves a second (each is a write, an fsync and a rename)


class FileResume:
    """The saved position of one file during one run (one thread calls it, but `batches` is
    drained by the reader thread, which only sets `eof`)."""

    def __init__(
        self, path: Path, where: Path, identity: FileIdentity, saved: IngestPosition | None,
        settings: IngestSettings, now: float,
    ) -> None:  # fmt: skip
        self.path, self.where, self.identity, self.saved = path, where, identity, saved
        self.start = acked_of(saved) if saved is not None else AckedPosition(0, SeekPoint(0, 0))
        self.tracker = AckTracker(self.start, settings.position_interval_s, _SAVE_GAP_S, now)
        self.eof = False

    @classmethod
    def open(
        cls, path: Path, common: CommonSettings, settings: IngestSettings, *, from_start: bool
    ) -> FileResume:
        """The file's saved position (ignored with `from_start`), and a log line saying where
        this run starts."""
        identity = FileIdentity.of(path)
        where = position_file(common.state_dir, identity)
        saved = load_position(where, identity)
        if from_start and saved is not None:
            log.info(
                "--from-start: sending %s from line 1 (its saved position, %d rows acknowledged, "
                "is replaced)", path, saved.lines,
            )  # fmt: skip
            saved = None
        resume = cls(path, where, identity, saved, settings, time.monotonic())
        if saved is not None and saved.complete:
            log.info(
                "%s was ingested completely (%d rows acknowledged): nothing to send (pass "
                "--from-start to send it again)", path, saved.lines,
            )  # fmt: skip
        elif saved is not None and saved.lines:
            log.info(
                "resuming %s at line %d (%d rows already acknowledged)",
                path, saved.lines + 1, saved.lines,
            )  # fmt: skip
        return resume

    @property
    def finished(self) -> bool:
        """The whole file is acknowledged already: nothing to send."""
        return self.saved is not None and self.saved.complete

    @property
    def resumed_from_line(self) -> int | None:
        """The line this run starts at when it resumes (None: from line 1)."""
        return self.start.lines + 1 if self.start.lines else None

    def batches(self, *, chunk_bytes: int, max_line: int) -> Iterator[SourceBatch]:
        """The file's lines after the acknowledged ones; sets `eof` once the file is read."""
        start = None
        if self.start.lines:
            start = FileStart(self.start.seek, skip_through=self.start.lines)
        yield from file_batches(
            self.path, chunk_bytes=chunk_bytes, max_line=max_line, start=start,
            tag=self.identity.source_tag,
        )  # fmt: skip
        self.eof = True

    def checkpoint(
        self, producer: CountingProducer, stop: threading.Event | None, now: float
    ) -> None:
        """Between two batches: note a quiet point (or flush for one when none came for
        `position_interval_s`) and save the position when it moved (at most every 0.1 s)."""
        tracker = self.tracker
        if producer.outstanding() == 0:
            tracker.quiet(producer.failed_total(), now)
        elif tracker.barrier_due(now):
            if producer.wait_acked(stop, timeout_s=60.0):
                now = time.monotonic()
                tracker.quiet(producer.failed_total(), now)
        if tracker.save_due(now):
            self._save(complete=False, now=now)

    def handed(self, prepared: PreparedBatch) -> None:
        """`prepared` was handed to the producer (in source order)."""
        self.tracker.handed(prepared.read, prepared.seek)

    def finish(self, producer: CountingProducer, purged: int, *, read_all: bool) -> None:
        """After `purged = producer.close()` (nothing is outstanding any more: every record is
        acknowledged, failed or purged): save the final position. read_all: the loop consumed
        every batch (not stopped, no exception); with `eof`, the file is then complete."""
        now = time.monotonic()
        self.tracker.quiet(producer.failed_total() + purged, now)
        acked = self.tracker.acked
        complete = read_all and self.eof and self.tracker.all_acked
        if acked != self.start or complete or self.tracker.frozen:
            self._save(complete=complete, now=now)
        state = "complete" if complete else f"{acked.lines} rows acknowledged"
        log.info("position of %s saved: %s (%s)", self.path, state, self.where)

    def _save(self, *, complete: bool, now: float) -> None:
        save_position(self.where, self.identity, self.tracker.acked, complete)
        self.tracker.saved(now)
