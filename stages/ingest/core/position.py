"""Which prefix of a file is acknowledged by the broker, per batch (pure: time is an input).

librdkafka reports failures only (`delivery.report.only.error`: a success costs no Python
callback), and records of one batch go to several partitions whose acknowledgements arrive in
any order, so no single report says "every line up to L is acknowledged". A *quiet point* does:
a moment when the producer has nothing outstanding (`len(producer) == 0`: no record queued, in
flight or with an unserved report). Then every record handed to it so far is acknowledged or
failed, and failures are counted by then. The run loop asks for one between two batches (free:
at a limited rate the producer is idle most of the time) and, when there has been none for
`interval_s` (full speed keeps the queue busy), makes one by flushing. So the position costs a
few calls per batch and one flush per `interval_s` at most, never work per row.

Once any record failed, the position never moves again in this run: the lines after the last
quiet point before the failure are sent again by the next run (at least once, never lost).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeekPoint:
    """A line boundary of a file whose byte offset is known: lines 1..`line` end at `byte`
    (byte None: not seekable, e.g. gzip; read from the start and skip `line` lines)."""

    line: int
    byte: int | None


@dataclass(frozen=True)
class AckedPosition:
    """Lines 1..`lines` of the file are acknowledged; `seek` is at or before line `lines`."""

    lines: int
    seek: SeekPoint


class AckTracker:
    """Follows the lines handed to the producer and the quiet points of the producer.

    start: the position the run resumed from (lines 0 and SeekPoint(0, 0 or None) for a fresh
    start). interval_s: the longest wait for a quiet point before `barrier_due` asks for a
    flush. save_gap_s: the shortest time between two saves (each save is a small file write
    and an fsync, about 0.3 ms here).
    """

    def __init__(
        self, start: AckedPosition, interval_s: float, save_gap_s: float, now: float
    ) -> None:
        self._handed = start.lines
        self._handed_seek = start.seek
        self._acked = self._saved = start
        self._interval, self._save_gap = interval_s, save_gap_s
        self._last_quiet = self._last_save = now
        self.frozen = False  # a record failed: the position stays where it is

    @property
    def acked(self) -> AckedPosition:
        """The acknowledged position (what a save writes)."""
        return self._acked

    @property
    def all_acked(self) -> bool:
        """Every line handed so far is acknowledged (and nothing failed)."""
        return not self.frozen and self._acked.lines == self._handed

    def handed(self, lines: int, seek: SeekPoint | None) -> None:
        """`lines` more lines, in source order, were handed to the producer; `seek`: a seek
        point at the end of them, when the source knows one."""
        self._handed += lines
        if seek is not None:
            self._handed_seek = seek

    def quiet(self, failed: int, now: float) -> None:
        """The producer had nothing outstanding and `failed` records failed in this run so
        far: every line handed is acknowledged, unless something failed."""
        self._last_quiet = now
        if failed:
            self.frozen = True
        if not self.frozen:
            self._acked = AckedPosition(self._handed, self._handed_seek)

    def barrier_due(self, now: float) -> bool:
        """True when lines wait for acknowledgement and no quiet point came for `interval_s`."""
        if self.frozen or self._handed == self._acked.lines:
            return False
        return now - self._last_quiet >= self._interval

    def save_due(self, now: float) -> bool:
        """True when the acknowledged position moved and the last save is `save_gap_s` old."""
        return self._acked != self._saved and now - self._last_save >= self._save_gap

    def saved(self, now: float) -> None:
        """The caller wrote `acked` to its file."""
        self._saved, self._last_save = self._acked, now
