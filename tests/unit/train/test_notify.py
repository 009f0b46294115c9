"""The trainer's wake-up hint to the publisher: what it sends, and a Redis that fails never
raising nor being asked again at every export."""

from __future__ import annotations

from typing import Any

from stages.train.notify import RETRY_AFTER_S, ExportNotifier


class _Redis:
    """Records what is published; fails while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[bytes, str]] = []

    def publish(self, channel: bytes, message: str) -> int:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append((channel, message))
        return 1

    def close(self) -> None:
        pass


def test_the_hint_names_the_run_and_the_export() -> None:
    redis = _Redis()
    notifier = ExportNotifier(redis, b"freshrec:v1:{ns}:hint:exports")
    assert notifier.notify("abc123", 7) is True
    assert redis.sent == [(b"freshrec:v1:{ns}:hint:exports", "abc123/7")]
    assert notifier.sent == 1


def test_after_a_failure_hints_are_skipped_for_a_while_then_tried_again() -> None:
    redis, now = _Redis(), [100.0]
    notifier = ExportNotifier(redis, b"c", clock=lambda: now[0])
    redis.down = True
    assert notifier.notify("run", 1) is False
    assert notifier.notify("run", 2) is False  # skipped: no second attempt within the pause
    assert notifier.failures == 1
    now[0] += RETRY_AFTER_S + 1
    redis.down = False
    assert notifier.notify("run", 3) is True
    assert [m for _, m in redis.sent] == ["run/3"]


def test_from_settings_names_the_namespace_channel(tmp_path: Any) -> None:
    from stages.common.settings import CommonSettings, load_settings

    common = load_settings(CommonSettings, redis_namespace="pipe-1", state_dir=tmp_path,
                           redis_url="redis://127.0.0.1:1/0")
    notifier = ExportNotifier.from_settings(common)
    try:
        assert notifier.channel == b"freshrec:v1:{pipe-1}:hint:exports"
        assert notifier.notify("run", 1) is False  # nothing listens on port 1: no raise
    finally:
        notifier.close()
