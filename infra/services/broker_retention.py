"""Retention for the embedded broker (Tansu, memory storage): when to restart it empty.

Tansu 0.6.0 keeps every record in memory and enforces neither `retention.ms` nor
`retention.bytes`; its DeleteRecords is not implemented (the request panics the connection's
task). DeleteTopics does free the memory, but not safely under load: a produce in flight while
the topic is deleted leaves its batch behind at the old end offset, and the recreated topic then
reports that offset as its earliest, so a consumer that starts over lands there and skips
everything before it (measured at 2,000 events/s). So the keeper (`broker_keeper.py`) "rolls"
the broker: restarts Tansu empty on the same port and creates every topic again with the same
partitions and configs. Topics get new ids and start at offset 0, consumer groups start over:
what the stages already handle for a broker restart (stages/features/topic_ids.py).

The rule, checked every `check_interval_s` from the broker's resident memory (RSS):

- soft (`memory_mb`): once RSS passes it, the broker is rolled at a moment when every topic
  that holds records has been read to its end by every consumer group that reads it. A topic
  with records that no group reads (a dead-letter topic someone should look at) holds the roll
  back: nothing unread is dropped by this rule.
- hard (`memory_limit_mb`, 0 = off): RSS past it for `_FORCE_AFTER_S` with that moment not
  come -> rolled anyway; the unread records are lost (logged with how many per group), as
  Kafka's retention.bytes drops what a lagging consumer has not read.
- a roll is only considered once RSS has grown by a quarter of `memory_mb` since the last one,
  so memory that a roll cannot free never makes the keeper roll over and over.

Pure: no clients, no clock (times are passed in). The adapter is `broker_keeper.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from stages.common.settings import settings_config

MB = 1 << 20
_MIN_GROWTH = 0.25  # of memory_mb, since the last roll
_FORCE_AFTER_S = 10.0  # over the hard limit this long with records unread -> force


class EmbeddedKafkaSettings(BaseSettings):
    """Memory bounds of the embedded Kafka broker. Env prefix `FRESHREC_KAFKA_`."""

    model_config = settings_config("kafka")

    memory_mb: int = Field(
        512,
        ge=32,
        description="Resident memory of the embedded broker (Tansu keeps records in memory) "
        "above which it is restarted empty, with the same topics, at a moment when every "
        "consumer group has read every topic to its end (new topic ids, offsets from 0).",
    )
    memory_limit_mb: int = Field(
        2048,
        ge=0,
        description="Hard bound: past it for 10 s without such a moment, the broker is "
        "restarted empty anyway (the unread records are lost, and logged). 0: never drop "
        "unread records (memory then grows while a consumer lags).",
    )
    check_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often the broker's memory is checked."
    )

    @model_validator(mode="after")
    def _limit_above_budget(self) -> EmbeddedKafkaSettings:
        if 0 < self.memory_limit_mb < self.memory_mb:
            raise ValueError(
                f"FRESHREC_KAFKA_MEMORY_LIMIT_MB ({self.memory_limit_mb}) must be 0 or at "
                f"least FRESHREC_KAFKA_MEMORY_MB ({self.memory_mb})"
            )
        return self


@dataclass(frozen=True)
class TopicState:
    """One topic as the broker reports it.

    `ends`: the end offset (next offset to be written) of each partition, which on this broker
    is also its record count (every incarnation starts at 0). `committed`: for each consumer
    group with a committed offset on this topic, its committed offset per partition (-1:
    none on that partition)."""

    name: str
    ends: tuple[int, ...]
    committed: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """Records held (all partitions)."""
        return sum(self.ends)

    def unread(self) -> dict[str, int]:
        """Records each reading group has not committed yet."""
        return {
            group: sum(max(0, end - max(0, c)) for end, c in zip(self.ends, offsets, strict=True))
            for group, offsets in self.committed.items()
        }

    @property
    def fully_read(self) -> bool:
        """At least one group reads it, and every such group has committed every end."""
        return bool(self.committed) and not any(self.unread().values())


@dataclass(frozen=True)
class Roll:
    """Restart the broker empty. `forced`: over the hard limit, `unread` records (per group)
    are dropped."""

    forced: bool
    records: int
    unread: Mapping[str, int]


def _unread(topics: Sequence[TopicState]) -> dict[str, int]:
    total: dict[str, int] = {}
    for topic in topics:
        if topic.records and not topic.committed:
            total["(no group)"] = total.get("(no group)", 0) + topic.records
        for group, count in topic.unread().items():
            if count:
                total[group] = total.get(group, 0) + count
    return total


@dataclass
class RollPolicy:
    """`choose` decides; `rolled` records what a roll left behind. One per broker."""

    settings: EmbeddedKafkaSettings
    floor_bytes: int = 0  # RSS right after the last roll (or at start)
    over_limit_since: float | None = None

    def wants_check(self, rss_bytes: int) -> bool:
        """Whether RSS is high enough to look at the topics at all (no broker request
        otherwise)."""
        budget = self.settings.memory_mb * MB
        return rss_bytes >= budget and rss_bytes - self.floor_bytes >= _MIN_GROWTH * budget

    def choose(self, rss_bytes: int, topics: Sequence[TopicState], now: float) -> Roll | None:
        """Roll now, or None. Never with no record held."""
        records = sum(t.records for t in topics)
        if not self.wants_check(rss_bytes) or not records:
            self.over_limit_since = None
            return None
        unread = _unread(topics)
        if not unread:
            return Roll(forced=False, records=records, unread={})
        limit = self.settings.memory_limit_mb * MB
        if not limit or rss_bytes < limit:
            self.over_limit_since = None
            return None
        if self.over_limit_since is None:
            self.over_limit_since = now
        if now - self.over_limit_since < _FORCE_AFTER_S:
            return None
        return Roll(forced=True, records=records, unread=unread)

    def rolled(self, rss_after_bytes: int) -> None:
        """A roll happened; RSS measured right after it is the new floor."""
        self.floor_bytes = rss_after_bytes
        self.over_limit_since = None
