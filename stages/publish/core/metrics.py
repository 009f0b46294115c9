"""Offline metrics of click predictions: AUC, logloss, normalized entropy, calibration.

Computed by `stages.common.metrics` (the one implementation, shared with the trainer); here
an undefined metric is None rather than nan, as `freshrec evaluate` prints it in JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stages.common.errors import PublishError
from stages.common.metrics import auc, click_metrics


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


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else value


def roc_auc(labels: npt.NDArray[Any], scores: npt.NDArray[Any]) -> float | None:
    """Mann-Whitney AUC with average ranks for ties; None with a single class."""
    return _defined(auc(labels, scores))


def evaluate_predictions(labels: npt.NDArray[Any], probs: npt.NDArray[Any]) -> EvalMetrics:
    """Metrics of probabilities `probs` for 0/1 `labels` (same length, at least one row)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise PublishError(f"labels {y.shape} and predictions {p.shape} do not match")
    if len(y) == 0:
        raise PublishError("no rows to evaluate")
    m = click_metrics(y, p)
    return EvalMetrics(
        _defined(m.auc), m.logloss, _defined(m.ne), _defined(m.calibration), m.samples
    )
