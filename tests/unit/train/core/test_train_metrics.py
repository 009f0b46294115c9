"""The trainer's window metrics are the shared implementation (see tests/unit/common)."""

from __future__ import annotations

import numpy as np

from stages.common.metrics import ClickMetrics, click_metrics
from stages.train.core.metrics import WindowMetrics, window_metrics


def test_window_metrics_are_the_shared_click_metrics() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.3).astype(np.uint8)
    p = rng.random(300)
    assert WindowMetrics is ClickMetrics
    assert window_metrics(y, p) == click_metrics(y, p)
