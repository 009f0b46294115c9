"""Offline metrics and freshness latencies."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from stages.common.errors import PublishError
from stages.publish.core.freshness import AliasSighting, freshness
from stages.publish.core.metrics import evaluate_predictions, roc_auc


def test_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = 0.01 + 0.98 * np.round(rng.random(500), 2)  # ties on purpose, no 0 or 1
    m = evaluate_predictions(y, p)
    assert m.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m.logloss == pytest.approx(log_loss(y, p), rel=1e-6)
    rate = y.mean()
    assert m.ne == pytest.approx(m.logloss / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))
    assert m.calibration == pytest.approx(p.mean() / rate)
    assert m.count == 500


def test_single_class_and_errors() -> None:
    assert roc_auc(np.zeros(3), np.array([0.1, 0.2, 0.3])) is None
    m = evaluate_predictions(np.zeros(3), np.array([0.1, 0.2, 0.3]))
    assert m.ne is None and m.calibration is None
    with pytest.raises(PublishError, match="no rows"):
        evaluate_predictions(np.zeros(0), np.zeros(0))


def test_freshness_latencies() -> None:
    sightings = [AliasSighting(2, 20_000, 15_000), AliasSighting(1, 10_000, 5_000)]
    events = np.array([1_000, 6_000, 14_000, 16_000])
    ingest = events + 100
    report = freshness(events, ingest, sightings)
    np.testing.assert_allclose(report.latencies_s, [8.9, 13.9, 5.9])
    assert report.uncovered == 1
    assert report.p50_s == pytest.approx(8.9)


def test_evaluate_predictions_is_the_shared_implementation() -> None:
    from stages.common.metrics import click_metrics

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    p = rng.random(200)
    m, shared = evaluate_predictions(y, p), click_metrics(y, p)
    assert (m.auc, m.logloss, m.ne, m.calibration, m.count) == (
        shared.auc, shared.logloss, shared.ne, shared.calibration, shared.samples
    )
