"""The mini-batch size of the next window: the configured one while the trainer keeps up, up
to `most` while samples wait in the feature store.

A small batch learns more per sample early in a model's life (bench/RESULTS-train.md, "AUC and
samples/s by batch size"), a larger one trains more samples per second (1,024: ~1.7x 256's).
A trainer that falls behind serves an ever staler model and, past the store's retention,
misses samples; so while more than `grow_windows` windows wait the batch doubles (up to
`most`), and once fewer than `shrink_windows` wait it halves (down to the configured size).
Replays have no backlog to measure and keep the configured size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AdaptiveBatch:
    """base: the configured batch (FRESHREC_TRAIN_BATCH_SIZE); most: the largest it may grow
    to (FRESHREC_TRAIN_BATCH_SIZE_MAX; `most == base` turns adaptation off); window: the
    samples of a full window."""

    base: int
    most: int
    window: int
    grow_windows: float = 2.0
    shrink_windows: float = 1.0
    current: int = 0

    def __post_init__(self) -> None:
        if self.most < self.base:
            raise ValueError(f"the largest batch ({self.most}) is smaller than the batch "
                             f"({self.base})")
        self.current = self.current or self.base

    def next(self, backlog: int | None) -> tuple[int, str | None]:
        """The batch for the next window, given the samples waiting after it (None: unknown,
        e.g. a replay), and why it changed (None when it did not)."""
        before = self.current
        if backlog is None:
            self.current = self.base
        elif backlog > self.grow_windows * self.window and self.current < self.most:
            self.current = min(self.current * 2, self.most)
        elif backlog < self.shrink_windows * self.window and self.current > self.base:
            self.current = max(self.current // 2, self.base)
        if self.current == before:
            return self.current, None
        waiting = "unknown" if backlog is None else f"{backlog:,}"
        return self.current, (f"mini-batch {before} -> {self.current}: {waiting} samples wait "
                              f"in the store (windows of {self.window:,})")
