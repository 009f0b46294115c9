"""The Faust app of the features stage, built by a factory (no module-level app).

Two ways to consume the events topic in micro-batches (setting `consumer`), both handing
`RecordBatch`es (with each record's partition and offset) to `FeaturesRuntime.handle`, which
writes them to Redis exactly once:

- "batch" (default): an app task runs one aiokafka group member (`batch_consumer.py`) and
  commits offsets after the Redis write. Fast (whole fetches, no per-record hand-offs).
- "stream": a Faust agent with `stream.take_events(batch_max, within)`; Faust acknowledges the
  events after `handle` returns, so the Kafka commit follows the Redis write. Faust's per-record
  machinery limits it to a few thousand events/s here.
 No tables, no changelog or repartition topics, no leader topic:
all state lives in Redis. Two timers: statistics snapshots and progress logs.

Run it with `freshrec features` (see `runner.run_features`), or as a plain Faust worker through
the lazy factory module: `faust -A stages.features.faust_main worker -l info`.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

from stages.common.errors import FeaturesError, require
from stages.common.settings import CommonSettings
from stages.features.core import DeadLetter, RecordBatch
from stages.features.pipeline import FeaturesRuntime, consumer_lag
from stages.features.settings import FeaturesSettings

log = logging.getLogger("freshrec.features")


@dataclass(frozen=True)
class FeaturesApp:
    """The Faust app and the runtime its agent and timers share."""

    app: Any  # faust.App (faust is an optional dependency)
    runtime: FeaturesRuntime


def create_app(common: CommonSettings, settings: FeaturesSettings) -> Any:
    """A configured `faust.App` for the features stage (not started)."""
    return build_app(common, settings).app


def _credentials(common: CommonSettings) -> Any:
    faust = require("faust", "features")
    context = (
        ssl.create_default_context(cafile=str(common.kafka_ssl_cafile))
        if common.kafka_ssl_cafile
        else None
    )
    protocol = common.kafka_security_protocol
    if protocol.startswith("SASL"):
        if protocol == "SASL_SSL" and context is None:
            context = ssl.create_default_context()
        password = common.kafka_sasl_password
        return faust.SASLCredentials(  # type: ignore[attr-defined]
            username=common.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=common.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if protocol == "SSL":
        context = context or ssl.create_default_context()
        return faust.SSLCredentials(context)  # type: ignore[attr-defined]
    return None


def build_app(common: CommonSettings, settings: FeaturesSettings) -> FeaturesApp:
    """Build the app, its agent and timers. Nothing connects until a worker starts it."""
    faust: Any = require("faust", "features")
    runtime = FeaturesRuntime(common, settings)
    datadir = common.state_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust fails on a fresh state dir otherwise
    app = faust.App(
        settings.group,
        broker=[f"kafka://{host}" for host in common.kafka_bootstrap.split(",")],
        broker_credentials=_credentials(common),
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_max_poll_records=settings.max_poll_records,
        consumer_auto_offset_reset="earliest",
        topic_partitions=common.topic_partitions,
        topic_replication_factor=common.topic_replication,
        topic_disable_leader=True,
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        web_enabled=settings.web_enabled,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=settings.web_port,
        datadir=str(datadir),
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        producer_acks=-1,
        # An agent that fails stops the worker (the default restarts it in a loop).
        agent_supervisor="mode.CrashingSupervisor",
    )
    topic_name = common.topic_events
    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes, partitions=1)

    async def send_dead(dead: list[DeadLetter]) -> None:
        now_ms = int(time.time() * 1000)
        futures = [
            await dlq.send(key=d.key, value=d.record(now_ms).value(), force=True) for d in dead
        ]
        for future in futures:
            await future
        log.warning(
            "%d dead letters -> %s (first: %s)", len(dead), settings.dlq_topic, dead[0].reason
        )

    if settings.consumer == "stream":
        events = app.topic(topic_name, key_type=bytes, value_type=bytes)

        @app.agent(events, name="freshrec.features.samples")
        async def samples(stream: Any) -> None:
            from stages.features.topic_ids import TopicIncarnation

            incarnation = TopicIncarnation(
                common, settings.kafka_retry_s, timeout_s=min(10.0, settings.kafka_retry_s)
            )
            await runtime.start()
            await dlq.maybe_declare()
            last_id: str | None = None
            try:
                async for batch in stream.take_events(
                    settings.batch_max, within=settings.batch_within_s
                ):
                    topic_id = await incarnation.current(topic_name)
                    if last_id is not None and topic_id != last_id:
                        # Faust's stream cannot be rewound from here: stop rather than guess.
                        raise FeaturesError(
                            f"topic {topic_name} was recreated under this worker (topic id "
                            f"{last_id} -> {topic_id}): the broker restarted empty or the "
                            "topic was deleted. Start `freshrec features` again: it stores "
                            "the new incarnation from its start"
                        )
                    last_id = topic_id
                    await runtime.handle(_records(topic_name, batch), send_dead, topic_id)
            finally:
                await runtime.close()

        runtime.lag_probe = lambda: consumer_lag(app.consumer, runtime)

        @app.on_partitions_assigned.connect
        async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            # Idleness counts from the last assignment: joining a group takes seconds.
            runtime.touch()
            log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))

    else:
        # Faust's own consumer would subscribe to nothing (and aiokafka refuses that).
        app.boot_strategy = app.BootStrategy(app, enable_kafka_consumer=False)

        @app.task
        async def samples_batches() -> None:
            from stages.features.batch_consumer import consume_batches

            await dlq.maybe_declare()
            await consume_batches(common, settings, runtime, send_dead, lambda: app.should_stop)

    @app.timer(settings.stats_interval_s)
    async def stats_snapshot() -> None:
        version = await runtime.flush_stats()
        if version is not None:
            log.debug("statistics snapshot version %d", version)

    @app.timer(settings.log_interval_s)
    async def progress() -> None:
        log.info("features: %s", runtime.progress_line(runtime.lag_probe()))

    return FeaturesApp(app, runtime)


def _records(topic: str, events: list[Any]) -> RecordBatch:
    import numpy as np

    messages = [e.message for e in events]
    return RecordBatch(
        topic=topic,
        partitions=np.fromiter((m.partition for m in messages), np.int32, len(messages)),
        offsets=np.fromiter((m.offset for m in messages), np.int64, len(messages)),
        keys=[m.key for m in messages],
        values=[m.value for m in messages],
    )

