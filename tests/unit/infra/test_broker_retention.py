"""The embedded broker's roll policy: when it is restarted empty (pure: no broker)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.services.broker_retention import (
    MB,
    EmbeddedKafkaSettings,
    Roll,
    RollPolicy,
    TopicState,
)


def _policy(memory_mb: int = 100, limit_mb: int = 0) -> RollPolicy:
    return RollPolicy(EmbeddedKafkaSettings(memory_mb=memory_mb, memory_limit_mb=limit_mb))


READ = TopicState("events", (10, 20), {"features": (10, 20)})
LAGGING = TopicState("events", (10, 20), {"features": (10, 5)})
UNREAD = TopicState("dead-letters", (500,), {})
EMPTY_UNREAD = TopicState("dead-letters", (0, 0), {})


def test_below_the_budget_nothing_is_rolled() -> None:
    assert _policy().choose(99 * MB, [READ], now=0.0) is None


def test_rolled_once_every_topic_with_records_is_read() -> None:
    roll = _policy().choose(150 * MB, [READ, EMPTY_UNREAD], now=0.0)
    assert roll == Roll(forced=False, records=30, unread={})


def test_never_rolled_with_nothing_held() -> None:
    assert _policy().choose(150 * MB, [EMPTY_UNREAD], now=0.0) is None


def test_unread_records_hold_the_roll_back_without_a_hard_limit() -> None:
    policy = _policy()
    for now in (0.0, 60.0, 3600.0):
        assert policy.choose(10_000 * MB, [LAGGING], now) is None
        assert policy.choose(10_000 * MB, [READ, UNREAD], now) is None


def test_every_reading_group_must_have_read_the_end() -> None:
    two = TopicState("events", (10,), {"a": (10,), "b": (9,)})
    no_commit_on_one_partition = TopicState("events", (10, 1), {"a": (10, -1)})
    assert two.unread() == {"a": 0, "b": 1}
    assert not two.fully_read
    assert not no_commit_on_one_partition.fully_read
    assert _policy().choose(150 * MB, [two], now=0.0) is None


def test_past_the_hard_limit_it_is_forced_after_a_grace() -> None:
    policy = _policy(100, 200)
    assert policy.choose(250 * MB, [LAGGING, UNREAD], now=0.0) is None
    assert policy.choose(250 * MB, [LAGGING, UNREAD], now=5.0) is None
    roll = policy.choose(250 * MB, [LAGGING, UNREAD], now=10.0)
    assert roll == Roll(forced=True, records=530, unread={"features": 15, "(no group)": 500})


def test_dropping_below_the_limit_restarts_the_grace() -> None:
    policy = _policy(100, 200)
    assert policy.choose(250 * MB, [LAGGING], now=0.0) is None
    assert policy.choose(150 * MB, [LAGGING], now=8.0) is None
    assert policy.choose(250 * MB, [LAGGING], now=12.0) is None
    assert policy.choose(250 * MB, [LAGGING], now=22.0) is not None


def test_after_a_roll_the_broker_must_grow_again_before_the_next() -> None:
    policy = _policy(100)
    policy.rolled(110 * MB)  # the roll could not bring RSS under the budget
    assert not policy.wants_check(120 * MB)
    assert policy.choose(120 * MB, [READ], now=0.0) is None
    assert policy.wants_check(135 * MB)
    assert policy.choose(135 * MB, [READ], now=1.0) is not None


def test_a_limit_below_the_budget_is_refused() -> None:
    with pytest.raises(ValidationError, match="MEMORY_LIMIT_MB"):
        EmbeddedKafkaSettings(memory_mb=512, memory_limit_mb=100)
    assert EmbeddedKafkaSettings(memory_mb=512, memory_limit_mb=0).memory_limit_mb == 0


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_KAFKA_MEMORY_MB", "300")
    monkeypatch.setenv("FRESHREC_KAFKA_MEMORY_LIMIT_MB", "0")
    settings = EmbeddedKafkaSettings()
    assert (settings.memory_mb, settings.memory_limit_mb) == (300, 0)
