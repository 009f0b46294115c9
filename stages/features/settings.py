"""Settings of the features stage: env prefix `FRESHREC_FEATURES_` (see `settings_config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from stages.common.settings import settings_config

#: The default byte bound of the sample stream, in MiB (`FeaturesSettings.retention_mb`).
DEFAULT_RETENTION_MB = 256


class FeaturesSettings(BaseSettings):
    """The Faust worker that turns events into samples. Env prefix `FRESHREC_FEATURES_`."""

    model_config = settings_config("features")

    group: str = Field(
        "freshrec-features",
        pattern=r"^[A-Za-z0-9_.\-]{1,100}$",
        description="Faust app id = Kafka consumer group id; workers with the same group split "
        "the partitions of the events topic.",
    )
    consumer: Literal["batch", "stream"] = Field(
        "batch",
        description="How the worker consumes: 'batch' = one aiokafka group member inside the "
        "Faust worker, whole fetches (fast); 'stream' = a Faust agent with stream.take_events "
        "(Faust's per-record path, a few thousand events/s).",
    )
    dlq_topic: str = Field(
        "freshrec.samples.dlq",
        pattern=r"^[A-Za-z0-9_.\-]{1,200}$",
        description="Dead-letter topic for events that break the contract (JSON with the reason).",
    )
    batch_max: int = Field(
        10_000,
        ge=1,
        le=100_000,
        description="Most events in one micro-batch (one fetch, or stream.take_events). Larger "
        "batches spread the per-batch costs (parser set-up, one script call per partition).",
    )
    batch_within_s: float = Field(
        0.2, gt=0, le=60, description="Seconds to wait for a micro-batch to fill before it is cut."
    )
    retention_blocks: int = Field(
        20_000,
        ge=10,
        description="Most sample blocks kept in the Redis stream (a second bound beside "
        "retention_mb); one block holds the rows of one partition in one micro-batch (at most "
        "batch_max rows). Older blocks are trimmed; a reader sees the jump in block seq numbers.",
    )
    retention_mb: int = Field(
        DEFAULT_RETENTION_MB,
        ge=1,
        le=1 << 20,
        description="Most MiB of sample blocks (their field values, ~269 bytes a sample) kept "
        "in the Redis stream; the oldest blocks are trimmed first (counted as "
        "retention_trimmed_blocks/_samples). Blocks grow when the worker lags, so a block "
        "count alone does not bound Redis memory. 256 is ~1M samples, a quarter of the embedded "
        "Redis's maxmemory (1gb, noeviction: a full Redis fails the writes), leaving room for "
        "the event-id windows, the other keys and the allocator's overhead.",
    )
    dedupe_window: int = Field(
        131_072,
        ge=0,
        le=1 << 26,
        multiple_of=8,
        description="Event-id check: how far back, in seqs of one source (the `<seq>` of event "
        "ids `<tag>:<seq>`), a re-sent event is recognised and dropped (counted as "
        "duplicates_dropped_by_id). Events older than this behind the newest seq of their "
        "source in their partition are stored unchecked (counted as dedupe_unchecked). Costs "
        "window/8 bytes per source and partition in Redis, rewritten with each write. 131,072 "
        "is ~65 s of one file at 2,000 events/s, ~2.6 s at 50,000; a resumed ingest re-sends "
        "~1 s. 0 turns the check off.",
    )
    dedupe_sources: int = Field(
        16,
        ge=1,
        le=1024,
        description="Event-id check: source tags remembered per partition (the least recently "
        "written are forgotten first; re-sends of a forgotten source are not recognised).",
    )
    stats_interval_s: float = Field(
        5.0, gt=0, le=3600, description="Seconds between statistics snapshots written to Redis."
    )
    log_interval_s: float = Field(
        10.0, gt=0, le=3600, description="Seconds between progress log lines."
    )
    session_timeout_s: float = Field(
        6.0, ge=1, le=300, description="Kafka consumer-group session timeout (short: see "
        "DEVELOPERS.md, group joins stall on the embedded broker with long ones)."
    )
    heartbeat_s: float = Field(
        2.0, gt=0, le=100, description="Kafka consumer-group heartbeat interval."
    )
    redis_retry_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="How long a Redis write or statistics snapshot is retried (backoff 0.2 s "
        "doubling to 5 s) while Redis does not answer, before the worker stops with an error. "
        "The Kafka offsets are committed only after the write, so nothing is lost meanwhile.",
    )
    redis_socket_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Redis socket connect and read timeout (seconds)."
    )
    kafka_retry_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="How long the worker retries asking the broker for the events topic's id "
        "(its incarnation, checked after every fetch) while the broker does not answer or does "
        "not know the topic, before it stops with an error.",
    )
    stream_buffer_maxsize: int = Field(
        20_000, ge=100, description="Faust per-partition stream buffer; fetching pauses when full."
    )
    max_poll_records: int = Field(
        5000, ge=1, description="Most records one Kafka fetch hands to Faust."
    )
    web_enabled: bool = Field(
        False, description="Run Faust's web server (bound to 127.0.0.1 only)."
    )
    web_port: int = Field(6066, ge=1, lt=65536, description="Port of Faust's web server.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics at "
        "http://127.0.0.1:PORT/metrics while the worker runs (unset: off).",
    )
    loglevel: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the worker."
    )
