"""The ingest stage's own settings: env prefix `FRESHREC_INGEST_` (see `common.settings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from stages.common.settings import settings_config


class IngestSettings(BaseSettings):
    """How ingest reads, batches and delivers; env var FRESHREC_INGEST_<FIELD> for each field."""

    model_config = settings_config("ingest")

    chunk_bytes: int = Field(
        4 << 20, ge=64 << 10, le=256 << 20, description="Bytes read from a source at a time."
    )
    max_line_bytes: int = Field(
        64 << 10,
        ge=1024,
        le=512 << 10,  # its dead letter (base64 in JSON) must stay under Kafka's 1 MB record limit
        description="Longer lines are dead-lettered (cut to this length) instead of sent.",
    )
    linger_ms: int = Field(
        25, ge=0, le=1000, description="librdkafka linger.ms: wait this long to fill a batch."
    )
    batch_bytes: int = Field(
        1_000_000, ge=1024, le=64 << 20, description="librdkafka batch.size (bytes per batch)."
    )
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = Field(
        "none",
        description="librdkafka compression.type of produced batches (none is fastest on "
        "loopback: lz4 halved the bare producer's rate against Tansu here; use lz4 or zstd "
        "over a real network).",
    )
    queue_max_messages: int = Field(
        500_000, ge=1000, le=10_000_000, description="librdkafka queue.buffering.max.messages."
    )
    delivery_timeout_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="A record not acknowledged by then counts as failed (message.timeout.ms); "
        "librdkafka retries until then, so a broker away for less loses nothing.",
    )
    position_interval_s: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="Longest time between two saved positions of a file source while it is "
        "sent: with no moment where every record is acknowledged for this long (full speed), "
        "ingest flushes to make one. A SIGKILL re-sends at most about this much.",
    )
    stop_flush_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="On SIGTERM, Ctrl-C or a Prefect cancel: wait at most this long for the "
        "records still queued; the rest count as failed (the saved position excludes them).",
    )
    progress_interval_s: float = Field(
        2.0, gt=0, le=3600, description="Seconds between progress lines on stderr."
    )
    create_topics: bool = Field(
        True, description="Create the events and dead-letter topics when they are absent."
    )
    resend_ring_records: int = Field(
        65_536,
        ge=0,
        le=1 << 25,
        description="Newest records (all partitions together) kept to be sent again when the "
        "events topic is recreated (the embedded broker restarted empty: issue #12); 0 turns "
        "it off. Keep it at most half of FRESHREC_FEATURES_DEDUPE_WINDOW (default 131,072): "
        "the features stage recognises a copy only within that many seqs of its source, and "
        "more records arrive before the copies. 65,536 is ~30 s at 2,000 events/s.",
    )
    resend_ring_bytes: int = Field(
        64 << 20, ge=0, le=1 << 32, description="Bytes (keys + values) the resend ring holds."
    )
    resend_ring_s: float = Field(
        30.0, gt=0, le=3600, description="Seconds a sent record stays in the resend ring."
    )
    topic_watch_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between two reads of the events topic's id (a new id: the topic "
        "was recreated, the resend ring is sent again).",
    )
    synthetic_seed: int = Field(
        0, ge=0, lt=2**63, description="Seed of `--source synthetic` (the generator's stream)."
    )
    synthetic_start: int = Field(
        0, ge=0, lt=2**40, description="First position of `--source synthetic` in its stream."
    )
    synthetic_events_per_s: float = Field(
        1000.0, gt=0, description="Simulated events per second of the synthetic stream's clock."
    )
