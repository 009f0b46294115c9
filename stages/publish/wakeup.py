"""Wake-up hints over Redis pub/sub: the publisher wakes when the trainer has uploaded an export,
serving wakes when the publisher has registered a version or moved `production`.

A hint is only a hint. It is sent after what it announces is visible in MLflow (the trainer's
`freshrec.export_seq` tag, a created version, a moved alias), carries nothing the receiver
trusts, and may be lost (Redis away, a subscriber reconnecting): every loop still polls MLflow
on its own interval, and a (re)subscribed listener wakes its loop once, since it may have
missed one. Redis being away never stops or slows publishing or serving beyond that interval.

Channels (Redis pub/sub channels are not keys and hold no data), layout version 1:
    freshrec:v1:{<namespace>}:hint:exports            the trainer uploaded an export
    freshrec:v1:{<namespace>}:hint:versions:<model>   a version of <model> was registered or
                                                      production moved
The trainer writes the first from its own copy of `exports_channel` (stages never import each
other); tests/unit/publish/test_wakeup.py checks both give the same bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from stages.common.errors import MissingDependency, require
from stages.common.settings import CommonSettings, redact_text

log = logging.getLogger(__name__)
HINT_LAYOUT_VERSION = 1
_STOP_CHECK_S = 0.2  # how often a waiting loop looks at its stop event
_BACKOFF_MAX_S = 30.0


def _channel(namespace: str, name: str) -> bytes:
    return f"freshrec:v{HINT_LAYOUT_VERSION}:{{{namespace}}}:hint:{name}".encode()


def exports_channel(namespace: str) -> bytes:
    """The channel of the trainer's "export uploaded" hints."""
    return _channel(namespace, "exports")


def versions_channel(namespace: str, model_name: str) -> bytes:
    """The channel of the publisher's "version registered / production moved" hints."""
    return _channel(namespace, f"versions:{model_name}")


def redis_client(common: CommonSettings, timeout_s: float | None) -> Any:
    """A Redis client on `FRESHREC_REDIS_URL` (`timeout_s`: socket timeout, None: none);
    None, logged, when redis-py is not installed (hints are then off)."""
    try:
        redis_mod: Any = require("redis", "features")
    except MissingDependency as exc:
        log.warning("wake-up hints off, polling only: %s", exc)
        return None
    kwargs: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": timeout_s,
                              "health_check_interval": 30}
    if common.redis_password is not None:
        kwargs["password"] = common.redis_password.get_secret_value()
    return redis_mod.Redis.from_url(common.redis_url, **kwargs)


class Notifier:
    """Sends hints on one channel. `notify` never raises: a failure is counted in `failures`
    and logged once per outage (info when Redis never answered, e.g. none is configured;
    warning when it had)."""

    def __init__(self, client: Any, channel: bytes) -> None:
        self._client = client
        self.channel = channel
        self.failures = 0
        self.sent = 0
        self._down = False

    @classmethod
    def from_settings(cls, common: CommonSettings, channel: bytes) -> Notifier | None:
        client = redis_client(common, timeout_s=1.0)
        return None if client is None else cls(client, channel)

    def notify(self, message: str) -> bool:
        """Publish `message`; True when Redis took it (whether anyone listens or not)."""
        try:
            self._client.publish(self.channel, message)
        except Exception as exc:  # redis-py's ConnectionError/TimeoutError, OSError
            self.failures += 1
            if not self._down:
                log.log(logging.WARNING if self.sent else logging.INFO,
                        "cannot send wake-up hints to Redis (%s); receivers poll instead",
                        redact_text(f"{type(exc).__name__}: {exc}")[:200])
            self._down = True
            return False
        if self._down and self.sent:
            log.info("wake-up hints reach Redis again")
        self._down = False
        self.sent += 1
        return True

    def close(self) -> None:
        self._client.close()


class Wakeup:
    """Listens to one channel in a daemon thread; `wait` returns early when a hint came."""

    def __init__(self, client: Any, channel: bytes, what: str) -> None:
        self._client = client
        self.channel = channel
        self.what = what
        self.hints = 0
        self._hint = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, common: CommonSettings, channel: bytes, what: str) -> Wakeup | None:
        """A started listener, or None when redis-py is missing (logged)."""
        client = redis_client(common, timeout_s=None)
        if client is None:
            return None
        wakeup = cls(client, channel, what)
        wakeup.start()
        return wakeup

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name=f"wakeup-{self.what}",
                                        daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float, stop: threading.Event) -> bool:
        """Block until a hint arrives (True), `stop` is set or `timeout_s` pass (False). A
        hint that arrived since the last `wait` returns at once."""
        deadline = time.monotonic() + timeout_s
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._hint.wait(min(left, _STOP_CHECK_S)):
                self._hint.clear()
                return True
        return False

    def pending(self) -> bool:
        """True when a hint arrived that no `wait` has returned yet."""
        return self._hint.is_set()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._client.close()

    def _listen(self) -> None:
        backoff, down = 1.0, False
        while not self._closed.is_set():
            pubsub = None
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                if down:
                    log.info("%s: wake-up hints from Redis again", self.what)
                backoff, down = 1.0, False
                self._hint.set()  # one may have been missed while not subscribed
                while not self._closed.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        self.hints += 1
                        self._hint.set()
            except Exception as exc:  # redis-py's ConnectionError/TimeoutError, OSError
                if not down:
                    log.warning("%s: no wake-up hints from Redis (%s); polling until it is "
                                "back (FRESHREC_PUBLISH_NOTIFY=false: no hints)", self.what,
                                redact_text(f"{type(exc).__name__}: {exc}")[:200])
                down = True
                self._closed.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            finally:
                if pubsub is not None:
                    pubsub.close()


def publisher_hints(
    common: CommonSettings, model_name: str, listen: bool
) -> tuple[Notifier | None, Wakeup | None]:
    """The publisher's side: a notifier to serving on the versions channel of `model_name`
    and, with `listen`, a started listener on the trainer's exports channel."""
    notifier = Notifier.from_settings(common, versions_channel(common.redis_namespace,
                                                               model_name))
    wakeup = Wakeup.from_settings(common, exports_channel(common.redis_namespace),
                                  "publisher") if listen else None
    return notifier, wakeup
