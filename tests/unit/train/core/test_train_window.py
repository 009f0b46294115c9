import math

import pytest

from stages.train.core.window import WindowPolicy


def test_closes_at_n_samples() -> None:
    policy = WindowPolicy(max_samples=100, max_seconds=30)
    assert not policy.should_close(99, first_sample_at=0.0, now=1.0)
    assert policy.should_close(100, first_sample_at=0.0, now=1.0)
    assert policy.should_close(250, first_sample_at=0.0, now=0.0)  # a block overshoots


def test_closes_t_seconds_after_first_sample() -> None:
    policy = WindowPolicy(max_samples=100, max_seconds=30)
    assert not policy.should_close(5, first_sample_at=10.0, now=39.9)
    assert policy.should_close(5, first_sample_at=10.0, now=40.0)


def test_empty_window_never_closes() -> None:
    policy = WindowPolicy(max_samples=1, max_seconds=0.5)
    assert not policy.should_close(0, first_sample_at=None, now=1e9)


def test_samples_only_policy_ignores_time() -> None:
    policy = WindowPolicy(max_samples=10)
    assert not policy.should_close(9, first_sample_at=0.0, now=1e12)
    assert policy.wait_seconds(9, 0.0, 5.0) == math.inf


def test_wait_seconds() -> None:
    policy = WindowPolicy(max_samples=100, max_seconds=30)
    assert policy.wait_seconds(0, None, 123.0) == 30
    assert policy.wait_seconds(3, 100.0, 110.0) == pytest.approx(20)
    assert policy.wait_seconds(3, 100.0, 500.0) == 0


@pytest.mark.parametrize("n,t", [(0, 1.0), (-3, 1.0), (10, 0.0), (10, -1.0)])
def test_rejects_bad_bounds(n: int, t: float) -> None:
    with pytest.raises(ValueError):
        WindowPolicy(max_samples=n, max_seconds=t)
