"""Progressive-validation metrics of one window.

Every window is scored by the model as it was before training on it, so the metrics are an
honest out-of-sample estimate. The definitions and the one implementation live in
`stages.common.metrics` (shared with `freshrec evaluate`); this module names them for the
trainer.
"""

from __future__ import annotations

from stages.common.metrics import EPS, Array, auc, base_entropy, click_metrics, logloss
from stages.common.metrics import ClickMetrics as WindowMetrics

__all__ = ["EPS", "WindowMetrics", "auc", "base_entropy", "logloss", "window_metrics"]


def window_metrics(labels: Array, preds: Array) -> WindowMetrics:
    """All metrics of one window. An empty window gives zero counts and nan metrics."""
    return click_metrics(labels, preds)
