"""Watching an alias for the freshness benchmark: when each version first appears under it.

Pair with `core.freshness.freshness(event_time_ms, ingest_time_ms, sightings)`: the events'
ingest times come from whoever produced them (Kafka message timestamps), the sightings from
here. A version whose `freshrec.max_event_time_ms` tag is "none" (trainer meta without it) is
not recorded: it cannot say which events it trained on.
"""

from __future__ import annotations

import threading
import time

from stages.common.errors import FreshrecError
from stages.common.settings import CommonSettings
from stages.publish.core.freshness import AliasSighting
from stages.publish.registry import Registry


def watch_alias(
    common: CommonSettings, alias: str, stop: threading.Event, poll_s: float = 0.25
) -> list[AliasSighting]:
    """Poll `alias` of `common.model_name` every `poll_s` seconds until `stop` is set; return
    one sighting per version seen (the wall-clock ms of the first poll that saw it). MLflow
    errors are retried at the next poll (the resolution of a sighting is `poll_s` plus the
    MLflow round trip)."""
    registry = Registry(common)
    seen: dict[int, AliasSighting] = {}
    while not stop.is_set():
        try:
            version = registry.alias_version(alias)
            if version is not None and version not in seen:
                now = int(time.time() * 1000)
                info = registry.version_info(version)
                if info.max_event_time_ms is not None:
                    seen[version] = AliasSighting(version, now, info.max_event_time_ms)
        except FreshrecError:
            pass
        stop.wait(poll_s)
    return sorted(seen.values(), key=lambda s: s.seen_ms)
