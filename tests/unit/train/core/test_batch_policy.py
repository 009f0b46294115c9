"""The mini-batch that adapts to the backlog (`stages.train.core.batch_policy`)."""

import pytest

from stages.train.core.batch_policy import AdaptiveBatch


def test_grows_while_samples_wait_and_shrinks_back() -> None:
    policy = AdaptiveBatch(base=256, most=1024, window=8192)
    assert policy.next(1000) == (256, None)  # keeping up
    size, why = policy.next(20_000)  # > 2 windows wait
    assert size == 512 and why is not None and "256 -> 512" in why and "20,000" in why
    assert policy.next(20_000)[0] == 1024
    assert policy.next(100_000) == (1024, None)  # bounded
    assert policy.next(10_000) == (1024, None)  # between 1 and 2 windows: unchanged
    assert policy.next(5_000)[0] == 512
    assert policy.next(0)[0] == 256
    assert policy.next(0) == (256, None)


def test_unknown_backlog_keeps_the_configured_batch() -> None:
    policy = AdaptiveBatch(base=256, most=1024, window=8192)
    policy.next(50_000)
    assert policy.next(None)[0] == 256


def test_off_when_the_largest_is_the_configured() -> None:
    policy = AdaptiveBatch(base=256, most=256, window=8192)
    assert policy.next(10**9) == (256, None)
    with pytest.raises(ValueError, match="smaller than the batch"):
        AdaptiveBatch(base=512, most=256, window=8192)
