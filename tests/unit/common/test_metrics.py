"""The one implementation of AUC, logloss, NE and calibration (stages.common.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss, roc_auc_score

from stages.common.metrics import auc, base_entropy, click_metrics, logloss


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])),
        min_size=2,
        max_size=60,
    )
)
def test_auc_matches_sklearn_with_ties(rows: list[tuple[int, float]]) -> None:
    y = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows])
    if len(set(y.tolist())) < 2:
        assert math.isnan(auc(y, p))
    else:
        assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.floats(0.0, 1.0, allow_nan=False)),
        min_size=1,
        max_size=60,
    )
)
def test_logloss_matches_sklearn(rows: list[tuple[int, float]]) -> None:
    y = np.array([r[0] for r in rows])
    p = np.clip(np.array([r[1] for r in rows]), 1e-7, 1 - 1e-7)
    expected = log_loss(y, p, labels=[0, 1])
    assert logloss(y, p) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_logloss_clips_certain_mistakes() -> None:
    value = logloss(np.array([1, 0]), np.array([0.0, 1.0]))
    assert math.isfinite(value) and value == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_click_metrics_ne_and_calibration() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.25).astype(np.uint8)
    ctr = y.mean()
    base = np.full(len(y), ctr)
    m = click_metrics(y, base)
    assert m.samples == 5000 and m.positives == int(y.sum())
    assert m.ne == pytest.approx(1.0, rel=1e-9)  # predicting the base rate has NE 1
    assert m.calibration == pytest.approx(1.0, rel=1e-9)
    assert m.auc == pytest.approx(0.5)
    doubled = click_metrics(y, np.full(len(y), 2 * ctr))
    assert doubled.calibration == pytest.approx(2.0) and doubled.ne > 1.0
    assert base_entropy(ctr) == pytest.approx(log_loss(y, base))


def test_degenerate_windows_give_nan_not_errors() -> None:
    empty = click_metrics(np.array([]), np.array([]))
    assert empty.samples == 0 and math.isnan(empty.logloss) and math.isnan(empty.auc)
    negatives = click_metrics(np.zeros(4), np.full(4, 0.1))
    assert math.isnan(negatives.auc) and math.isnan(negatives.ne)
    assert math.isnan(negatives.calibration)


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        auc(np.array([0, 1]), np.array([0.5]))
