"""What the trainer says about each window: a dataclass, its one-line text, its metric dict."""

from __future__ import annotations

import math
from dataclasses import dataclass

from stages.train.core.metrics import WindowMetrics


@dataclass(frozen=True)
class WindowReport:
    """One trained window.

    window: window number, 1-based and continuing across restarts; first_seq/last_seq: the
    block sequence numbers (store) or 1-based row numbers (replay) the window covered, inclusive;
    metrics: progressive validation before training; train_loss: the engine's training loss;
    seconds: wall time from the window's close to the end of training; samples_per_second:
    samples / seconds; table_size: admitted ids after training; evicted: ids evicted while
    training; missed_blocks: blocks found trimmed before they were read, during this window.
    """

    window: int
    first_seq: int
    last_seq: int
    metrics: WindowMetrics
    train_loss: float
    seconds: float
    samples_per_second: float
    table_size: int
    evicted: int
    missed_blocks: int = 0
    batch_size: int = 0  # the window's mini-batch (0: not reported)

    def line(self) -> str:
        """The compact one-line form printed per window, e.g.

        `window 12 n=8192 auc=0.7412 logloss=0.4712 ne=0.8923 cal=1.021 sps=10450 table=123456`
        followed by ` batch=256` when the mini-batch is reported and ` missed=3` only when
        blocks were missed. nan prints as `nan`.
        """
        m = self.metrics
        text = (
            f"window {self.window} n={m.samples} auc={_f(m.auc, 4)} logloss={_f(m.logloss, 4)} "
            f"ne={_f(m.ne, 4)} cal={_f(m.calibration, 3)} sps={_f(self.samples_per_second, 0)} "
            f"table={self.table_size}"
        )
        if self.batch_size:
            text += f" batch={self.batch_size}"
        if self.missed_blocks:
            text += f" missed={self.missed_blocks}"
        return text

    def as_metrics(self) -> dict[str, float]:
        """Finite values only, named for MLflow (a nan metric is left out, not logged)."""
        m = self.metrics
        values = {
            "samples": float(m.samples),
            "positives": float(m.positives),
            "auc": m.auc,
            "logloss": m.logloss,
            "ne": m.ne,
            "calibration": m.calibration,
            "mean_prediction": m.mean_prediction,
            "ctr": m.ctr,
            "train_loss": self.train_loss,
            "samples_per_second": self.samples_per_second,
            "table_size": float(self.table_size),
            "evicted": float(self.evicted),
            "missed_blocks": float(self.missed_blocks),
            "batch_size": float(self.batch_size) if self.batch_size else math.nan,
        }
        return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def _f(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return "nan"
    return f"{value:.{digits}f}"
