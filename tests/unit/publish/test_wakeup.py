"""Wake-up hints: the channel layout (exact bytes, the same on the trainer's side), waiting,
and a Redis that fails never raising out of a hint."""

from __future__ import annotations

import threading
import time
from typing import Any

from stages.publish.wakeup import Notifier, Wakeup, exports_channel, versions_channel
from stages.train.notify import exports_channel as trainer_exports_channel


def test_channel_layout_exact_bytes() -> None:
    assert exports_channel("ns-1") == b"freshrec:v1:{ns-1}:hint:exports"
    assert versions_channel("ns-1", "freshrec-ctr") == b"freshrec:v1:{ns-1}:hint:versions:freshrec-ctr"


def test_the_trainer_announces_on_the_channel_the_publisher_hears() -> None:
    for namespace in ("freshrec", "a.b_c-d", "x" * 64):
        assert trainer_exports_channel(namespace) == exports_channel(namespace)


class _Down:
    """A Redis client whose every call fails the way redis-py's does when Redis is away."""

    def publish(self, channel: bytes, message: str) -> int:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    def pubsub(self, **kwargs: Any) -> Any:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    def close(self) -> None:
        pass


def test_a_failing_redis_never_raises_out_of_a_hint() -> None:
    notifier = Notifier(_Down(), b"c")
    assert notifier.notify("v1 created") is False
    assert notifier.notify("v2 created") is False
    assert notifier.failures == 2


class _Hints:
    """A pubsub that delivers one message per `send()`."""

    def __init__(self) -> None:
        self.pending = threading.Semaphore(0)

    def subscribe(self, channel: bytes) -> None:
        pass

    def get_message(self, timeout: float) -> dict[str, Any] | None:
        if self.pending.acquire(timeout=timeout):
            return {"type": "message", "data": b"v1 created"}
        return None

    def close(self) -> None:
        pass


class _Client:
    def __init__(self, pubsub: _Hints) -> None:
        self._pubsub = pubsub

    def pubsub(self, **kwargs: Any) -> _Hints:
        return self._pubsub

    def close(self) -> None:
        pass


def test_wait_ends_early_on_a_hint_and_on_stop() -> None:
    hints = _Hints()
    wakeup = Wakeup(_Client(hints), b"c", "test")
    stop = threading.Event()
    wakeup.start()
    try:
        assert wakeup.wait(5, stop) is True  # subscribing wakes once: a hint may be missed
        started = time.monotonic()
        assert wakeup.wait(0.3, stop) is False
        assert time.monotonic() - started >= 0.3
        hints.pending.release()
        started = time.monotonic()
        assert wakeup.wait(5, stop) is True
        assert time.monotonic() - started < 2
        assert wakeup.hints == 1
        stop.set()
        started = time.monotonic()
        assert wakeup.wait(5, stop) is False
        assert time.monotonic() - started < 0.5
    finally:
        wakeup.close()


def test_a_listener_without_redis_keeps_trying_and_wait_still_times_out() -> None:
    wakeup = Wakeup(_Down(), b"c", "test")
    wakeup.start()
    try:
        started = time.monotonic()
        assert wakeup.wait(0.5, threading.Event()) is False
        assert time.monotonic() - started >= 0.5
    finally:
        wakeup.close()
