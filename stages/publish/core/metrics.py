"""Offline metrics of click predictions: AUC, logloss, normalized entropy, calibration."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stages.common.errors import PublishError

_EPS = 1e-7


@dataclass(frozen=True)
class EvalMetrics:
    """auc: ROC AUC (ties averaged; None when only one class is present); logloss: mean
    binary cross-entropy in nats (probabilities clipped to [1e-7, 1 - 1e-7]); ne: logloss /
    entropy of the base rate (None when the base rate is 0 or 1); calibration: mean predicted
    / mean observed (None when there is no click); count: rows scored."""

    auc: float | None
    logloss: float
    ne: float | None
    calibration: float | None
    count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roc_auc(labels: npt.NDArray[Any], scores: npt.NDArray[Any]) -> float | None:
    """Mann-Whitney AUC with average ranks for ties; None with a single class."""
    y = np.asarray(labels).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average rank of every run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def evaluate_predictions(labels: npt.NDArray[Any], probs: npt.NDArray[Any]) -> EvalMetrics:
    """Metrics of probabilities `probs` for 0/1 `labels` (same length, at least one row)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise PublishError(f"labels {y.shape} and predictions {p.shape} do not match")
    if len(y) == 0:
        raise PublishError("no rows to evaluate")
    pc = np.clip(p, _EPS, 1 - _EPS)
    logloss = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    rate = float(y.mean())
    ne = None
    if 0.0 < rate < 1.0:
        ne = logloss / float(-(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))
    calibration = float(p.mean() / rate) if rate > 0 else None
    return EvalMetrics(roc_auc(y, p), logloss, ne, calibration, int(len(y)))
