"""Metrics of click predictions, in NumPy: the one implementation of AUC, logloss, NE and
calibration (the trainer's progressive validation and `freshrec evaluate` both use it).

Definitions (labels y in {0, 1}, predictions p in [0, 1]):

    auc          probability that a random positive scores above a random negative, ties count
                 one half (Mann-Whitney U with average ranks); nan when only one class is present
    logloss      mean of -y log p - (1-y) log(1-p), p clipped to [EPS, 1 - EPS], EPS = 1e-7, in
                 nats; nan when empty
    ne           normalized entropy: logloss / entropy of the base rate (the logloss of always
                 predicting the observed CTR); nan when the base rate is 0 or 1 (or no rows)
    calibration  mean(p) / mean(y); nan when there is no positive

Callers that need another convention for "undefined" (None in JSON) convert the nan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EPS = 1e-7
Array = npt.NDArray[np.generic]


def as_pairs(labels: Array, preds: Array) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    """labels and predictions as flat float64 arrays; ValueError when their sizes differ."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(preds, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.shape} vs {p.shape}")
    return y, p


def average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Ranks 1..n of `values`; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ranked = values[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # runs of equal values
    ends = np.r_[starts[1:], len(ranked)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def auc(labels: Array, preds: Array) -> float:
    """ROC AUC with ties counted one half; nan unless both classes are present."""
    y, p = as_pairs(labels, preds)
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    if positives == 0 or negatives == 0:
        return math.nan
    rank_sum = float(average_ranks(p)[y == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def logloss(labels: Array, preds: Array) -> float:
    """Mean binary cross-entropy (nats) with predictions clipped to [EPS, 1 - EPS]; nan when
    empty."""
    y, p = as_pairs(labels, preds)
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
class ClickMetrics:
    """All metrics of one set of predictions (see the module docstring); samples and positives
    count the rows, mean_prediction = mean(p), ctr = mean(y) (nan when empty)."""

    samples: int
    positives: int
    auc: float
    logloss: float
    ne: float
    calibration: float
    mean_prediction: float
    ctr: float


def click_metrics(labels: Array, preds: Array) -> ClickMetrics:
    """All metrics at once. No rows: zero counts and nan metrics."""
    y, p = as_pairs(labels, preds)
    n = len(y)
    positives = int(y.sum())
    ctr = positives / n if n else math.nan
    mean_p = float(p.mean()) if n else math.nan
    loss = logloss(y, p)
    entropy = base_entropy(ctr) if n else 0.0
    return ClickMetrics(
        samples=n,
        positives=positives,
        auc=auc(y, p),
        logloss=loss,
        ne=loss / entropy if entropy > 0 else math.nan,
        calibration=mean_p / ctr if n and positives else math.nan,
        mean_prediction=mean_p,
        ctr=ctr,
    )
