"""Progressive-validation metrics of one window, in NumPy.

Every window is scored by the model as it was before training on it, so the metrics are an
honest out-of-sample estimate. Definitions (labels y in {0, 1}, predictions p in [0, 1]):

    auc          probability that a random positive scores above a random negative, ties count
                 one half (Mann-Whitney U with average ranks); nan when the window holds only one
                 class
    logloss      mean of -y log p - (1-y) log(1-p), p clipped to [eps, 1 - eps], eps = 1e-7
    ne           normalized entropy: logloss / entropy of the window's base rate (the logloss of
                 always predicting the window's CTR); nan when the base rate is 0 or 1
    calibration  mean(p) / mean(y); nan when the window has no positive
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EPS = 1e-7


def _check(labels: npt.NDArray[np.generic], preds: npt.NDArray[np.generic]) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(preds, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.shape} vs {p.shape}")
    return y, p


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Ranks 1..n, tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ranked = values[order]
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], len(ranked)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of (start+1 .. end)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(labels: npt.NDArray[np.generic], preds: npt.NDArray[np.generic]) -> float:
    """ROC AUC with ties counted one half; nan unless both classes are present."""
    y, p = _check(labels, preds)
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    if positives == 0 or negatives == 0:
        return math.nan
    rank_sum = float(_average_ranks(p)[y == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def logloss(labels: npt.NDArray[np.generic], preds: npt.NDArray[np.generic]) -> float:
    """Mean binary cross-entropy with predictions clipped to [EPS, 1 - EPS]; nan when empty."""
    y, p = _check(labels, preds)
    if len(y) == 0:
        return math.nan
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def base_entropy(ctr: float) -> float:
    """Entropy (nats) of a Bernoulli(ctr); 0 at ctr 0 or 1."""
    if ctr <= 0 or ctr >= 1:
        return 0.0
    return -(ctr * math.log(ctr) + (1 - ctr) * math.log1p(-ctr))


@dataclass(frozen=True)
class WindowMetrics:
    """Metrics of one window's progressive validation (see the module docstring)."""

    samples: int
    positives: int
    auc: float
    logloss: float
    ne: float
    calibration: float
    mean_prediction: float
    ctr: float


def window_metrics(
    labels: npt.NDArray[np.generic], preds: npt.NDArray[np.generic]
) -> WindowMetrics:
    """All metrics of one window. An empty window gives zero counts and nan metrics."""
    y, p = _check(labels, preds)
    n = len(y)
    positives = int(y.sum())
    ctr = positives / n if n else math.nan
    mean_p = float(p.mean()) if n else math.nan
    loss = logloss(y, p)
    entropy = base_entropy(ctr) if n else 0.0
    return WindowMetrics(
        samples=n,
        positives=positives,
        auc=auc(y, p),
        logloss=loss,
        ne=loss / entropy if entropy > 0 else math.nan,
        calibration=mean_p / ctr if n and positives else math.nan,
        mean_prediction=mean_p,
        ctr=ctr,
    )
