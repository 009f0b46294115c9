"""Initial weights (a new model predicts the prior click rate) and the optimizer's update rules
(accumulator starts for rows and dense variables, the cross kernels' learning-rate factor)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from stages.common import reference_model
from stages.common.model_export import ModelSpec

tf = pytest.importorskip("tensorflow")
from stages.train.engine import models, optim  # noqa: E402

SPECS = {
    "wide_deep": ModelSpec("wide_deep", 4, (8, 4)),
    "dcn": ModelSpec("dcn", 4, (8,), cross_layers=2),
}


@pytest.mark.parametrize("model", ["wide_deep", "dcn"])
@pytest.mark.parametrize("prior", [0.25, 0.5])
def test_new_model_predicts_the_prior(model: str, prior: float) -> None:
    spec = SPECS[model]
    rng = np.random.default_rng(0)
    dense = models.init_dense(spec, seed=3, prior_ctr=prior)
    ids = rng.integers(0, 1 << 62, size=50, dtype=np.uint64)
    rows = models.init_rows(spec, ids, seed=3)[None, :26].repeat(8, axis=0).astype(np.float64)
    x = rng.normal(scale=5.0, size=(8, spec.n_dense)).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-reference_model.logits(spec, dense, rows, x)))
    np.testing.assert_allclose(p, prior, rtol=1e-6)
    # the hidden layers are still random, so gradients reach them once the head moves
    assert np.abs(dense["deep/0/kernel"]).max() > 0


def test_init_is_seeded_and_checks_the_prior() -> None:
    a, b = models.init_dense(SPECS["dcn"], 1), models.init_dense(SPECS["dcn"], 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = models.init_dense(SPECS["dcn"], 2)
    assert not np.array_equal(a["cross/0/kernel"], other["cross/0/kernel"])
    with pytest.raises(ValueError, match="prior_ctr"):
        models.init_dense(SPECS["dcn"], 1, prior_ctr=1.0)


def test_lr_scale_by_canonical_name() -> None:
    assert optim.lr_scale("cross/0/kernel") == pytest.approx(0.1)
    assert optim.lr_scale("cross/1/bias") == pytest.approx(0.1)
    assert optim.lr_scale("deep/0/kernel") == 1.0
    assert optim.lr_scale("head/bias") == 1.0


@pytest.mark.parametrize("name", ["cross/0/kernel", "deep/0/kernel"])
def test_adagrad_dense_step(name: str) -> None:
    opt = optim.Optimizer("adagrad", 0.05, 0.0)
    w0 = np.array([[1.0, -2.0], [0.5, 0.0]], np.float32)
    g = np.array([[0.3, -0.01], [0.0, 2.0]], np.float32)
    var = tf.Variable(w0, name=name)
    slots = [tf.Variable(s) for s in opt.slot_init(w0.shape)]
    opt.apply_dense(var, tf.constant(g), slots, tf.constant(1.0), False, optim.lr_scale(name))
    lr = 0.05 * (0.1 if name.startswith("cross/") else 1.0)
    want = w0 - lr * g / (np.sqrt(g**2 + optim.DENSE_ACC0) + 1e-7)
    np.testing.assert_allclose(var.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(slots[0].numpy(), g**2, rtol=1e-6)


def test_adagrad_rows_step_uses_row_start_and_leaves_other_rows() -> None:
    opt = optim.Optimizer("adagrad", 0.05, 0.0)
    pool = np.zeros((4, 3), np.float32)
    var = tf.Variable(pool, name="pool_rows")
    slots = [tf.Variable(s) for s in opt.slot_init(pool.shape)]
    g = np.array([[1e-2, -1e-3, 0.0], [2e-2, 0.0, -5e-3]], np.float32)
    opt.apply_rows(var, tf.constant([2, 0], tf.int64), tf.constant(g), slots, tf.constant(1.0))
    step = 0.05 * g / (np.sqrt(g**2 + optim.ROW_ACC0) + 1e-7)
    got = var.numpy()
    np.testing.assert_allclose(got[[2, 0]], -step, rtol=1e-5)
    assert not got[[1, 3]].any() and not slots[0].numpy()[[1, 3]].any()
    # a gradient well above sqrt(ROW_ACC0) moves the row by about lr at its first step
    assert abs(got[2, 0]) > 0.045


def test_unknown_optimizer_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.Optimizer("rmsprop", 0.05, 0.0)
