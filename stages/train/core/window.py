"""The window policy: when the trainer stops accumulating samples and trains.

A window closes when it holds at least `max_samples` samples, or when `max_seconds` have passed
since its first sample arrived, whichever comes first. Blocks are never split, so a window may
hold up to one block more than `max_samples`. An empty window never closes on time (there is
nothing to train). The clock is passed in (seconds, any monotonic origin), so this is pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowPolicy:
    """Close at `max_samples` samples or `max_seconds` after the first sample.

    `max_seconds = math.inf` closes on samples only (used by replays, which must be
    deterministic).
    """

    max_samples: int
    max_seconds: float = math.inf

    def __post_init__(self) -> None:
        if self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {self.max_samples}")
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")

    def should_close(self, samples: int, first_sample_at: float | None, now: float) -> bool:
        """True when a window with `samples` samples, the first seen at `first_sample_at`
        (None when empty), must close at time `now`."""
        if samples <= 0:
            return False
        if samples >= self.max_samples:
            return True
        return first_sample_at is not None and now - first_sample_at >= self.max_seconds

    def wait_seconds(self, samples: int, first_sample_at: float | None, now: float) -> float:
        """How long the reader may block waiting for more data before the window is due:
        `max_seconds` from now for an empty window, the remainder otherwise, never negative."""
        if samples <= 0 or first_sample_at is None:
            return self.max_seconds
        return max(0.0, self.max_seconds - (now - first_sample_at))
