"""Freshness: the time from an event entering the pipeline to a servable version that trained
on it being under the alias.

A version "trained on" an event when its `max_event_time_ms` (the newest event time the
trainer had seen, from the export meta) is at least the event's time. Given when each version
was first seen under the alias, an event's freshness is the first such sighting after which a
version covering it is under the alias, minus the event's ingest time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class AliasSighting:
    """Version `version` was first seen under the alias at `seen_ms` (ms since the epoch);
    it trained on events up to `max_event_time_ms`."""

    version: int
    seen_ms: int
    max_event_time_ms: int


@dataclass(frozen=True)
class FreshnessReport:
    """Latencies in seconds of the covered events, their p50/p95, and how many events no
    sighting covered yet (left out of the percentiles)."""

    latencies_s: npt.NDArray[np.float64]
    p50_s: float | None
    p95_s: float | None
    uncovered: int


def freshness(
    event_time_ms: npt.NDArray[np.int64],
    ingest_time_ms: npt.NDArray[np.int64],
    sightings: list[AliasSighting],
) -> FreshnessReport:
    """Latency per event = first `seen_ms` of a sighting with `max_event_time_ms >=` the
    event time, at or after its ingest time, minus the ingest time. Sightings may come in any
    order (sorted by `seen_ms` here); after a rollback, an older version covers less."""
    events = np.asarray(event_time_ms, dtype=np.int64)
    ingest = np.asarray(ingest_time_ms, dtype=np.int64)
    ordered = sorted(sightings, key=lambda s: s.seen_ms)
    seen = np.array([s.seen_ms for s in ordered], dtype=np.int64)
    covered = np.array([s.max_event_time_ms for s in ordered], dtype=np.int64)
    latencies = np.full(len(events), np.nan)
    for i, (event, start) in enumerate(zip(events, ingest)):
        ok = np.flatnonzero((covered >= event) & (seen >= start))
        if len(ok):
            latencies[i] = (seen[ok[0]] - start) / 1000.0
    done = latencies[~np.isnan(latencies)]
    p50 = float(np.percentile(done, 50)) if len(done) else None
    p95 = float(np.percentile(done, 95)) if len(done) else None
    return FreshnessReport(done, p50, p95, int(np.isnan(latencies).sum()))
