"""The trainer's wake-up hint to the publisher: "export N of run R is uploaded", on Redis pub/sub.

Sent by the outbox's thread right after the export's `freshrec.export_seq` tag is set, so a
publisher woken by it finds the export. A hint is never needed for correctness (the publisher
polls MLflow on its interval too), so `notify` never raises and never makes the outbox wait
long: a Redis that does not answer within a second is skipped for `RETRY_AFTER_S`.

The channel is the publish stage's `wakeup.exports_channel` (layout version 1); stages never
import each other, so it is written here again and a unit test compares the two.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from stages.common.errors import require
from stages.common.settings import CommonSettings, redact_text

log = logging.getLogger(__name__)
RETRY_AFTER_S = 10.0


def exports_channel(namespace: str) -> bytes:
    """`freshrec:v1:{<namespace>}:hint:exports` (see the module docstring)."""
    return f"freshrec:v1:{{{namespace}}}:hint:exports".encode()


class ExportNotifier:
    """Publishes "<run id>/<export seq>" on the exports channel; counts `failures`."""

    def __init__(self, client: Any, channel: bytes, clock: Any = time.monotonic) -> None:
        self._client = client
        self.channel = channel
        self._clock = clock
        self.failures = 0
        self.sent = 0
        self._skip_until = 0.0

    @classmethod
    def from_settings(cls, common: CommonSettings) -> ExportNotifier:
        redis_mod: Any = require("redis", "train")
        kwargs: dict[str, Any] = {"socket_connect_timeout": 1, "socket_timeout": 1}
        if common.redis_password is not None:
            kwargs["password"] = common.redis_password.get_secret_value()
        client = redis_mod.Redis.from_url(common.redis_url, **kwargs)
        return cls(client, exports_channel(common.redis_namespace))

    def notify(self, run_id: str, export_seq: int) -> bool:
        """Send the hint; False (logged: info the first time, warning when it had worked)
        when Redis did not take it. Never raises."""
        if self._clock() < self._skip_until:
            return False
        try:
            self._client.publish(self.channel, f"{run_id}/{export_seq}")
        except Exception as exc:  # redis-py's ConnectionError/TimeoutError, OSError
            self.failures += 1
            self._skip_until = self._clock() + RETRY_AFTER_S
            if self.failures == 1 or self.sent:
                log.log(logging.WARNING if self.sent else logging.INFO,
                        "no wake-up hint to the publisher (it polls instead): %s",
                        redact_text(f"{type(exc).__name__}: {exc}")[:200])
            self.sent = 0
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._client.close()
