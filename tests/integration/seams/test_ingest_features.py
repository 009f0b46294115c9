"""Seam: the real ingest into the real features worker, on the real broker and redis-server.

Every line ingest reads ends up exactly once as a stored sample or a dead letter, and every
dead letter on both dead-letter topics (ingest's and features') is a `DeadLetterRecord`.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from stages.common.dead_letter import DeadLetterRecord, FilePosition, TopicPosition
from stages.common.rows import RowParser
from stages.common.schema import load_schema
from stages.common.settings import CommonSettings, load_settings
from stages.features.readback import read_blocks, read_counters, read_gaps
from stages.features.runner import run_features
from stages.features.settings import FeaturesSettings
from stages.ingest.run import run_ingest
from stages.ingest.settings import IngestSettings
from tests.integration.ingest.conftest import _read_topic as read_topic

CRITEO = load_schema("criteo")

pytestmark = pytest.mark.integration

# Lines ingest must dead-letter, appended after the sample's rows: (line, reason kind).
BAD_LINES = [
    (b"0\t1\t2", "wrong number of fields"),
    (b"", "blank line"),
    (b"\xff\xfe binary \x00", "not UTF-8"),
]
# Records a foreign producer wrote to the events topic: the only way a features dead letter
# arises, since ingest sends valid events only.
FOREIGN = [b"garbage", b"1\tx:1\tnot-a-time\t0"]


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False})
    for i, value in enumerate(values):
        producer.produce(topic, value, key=b"foreign:%d" % i)
    assert producer.flush(60) == 0


def test_every_line_ingest_reads_is_a_sample_or_a_dead_letter(
    criteo_sample: Path, tmp_path: Path, make_settings: Callable[..., CommonSettings]
) -> None:
    common = make_settings("kafka", "redis")
    rows = gzip.decompress(criteo_sample.read_bytes()).splitlines()
    source = tmp_path / "mixed.tsv"
    source.write_bytes(b"\n".join(rows + [line for line, _ in BAD_LINES]) + b"\n")

    ingested = run_ingest(
        common, load_settings(IngestSettings, linger_ms=5), source, progress=False
    )
    assert (ingested.read, ingested.dead_lettered, ingested.failed) == (
        len(rows) + len(BAD_LINES), len(BAD_LINES), 0
    )
    _produce(common.kafka_bootstrap, common.topic_events, FOREIGN)
    features = load_settings(
        FeaturesSettings,
        group=f"{common.redis_namespace}-features",
        dlq_topic=f"{common.redis_namespace}.features.dlq",
        stats_interval_s=1,
    )
    summary = run_features(common, features, max_idle_s=5)

    client = redis.Redis.from_url(common.redis_url)
    blocks = read_blocks(client, common.redis_namespace)
    stored = sum(len(b.samples) for b in blocks)
    ingest_dlq = [DeadLetterRecord.parse(v) for _, v in
                  read_topic(common.kafka_bootstrap, common.topic_events_dlq)]
    features_dlq = [DeadLetterRecord.parse(v) for _, v in
                    read_topic(common.kafka_bootstrap, features.dlq_topic)]

    # events read = samples stored + dead letters of both stages, and nothing twice
    assert ingested.read + len(FOREIGN) == stored + len(ingest_dlq) + len(features_dlq)
    assert (stored, len(ingest_dlq), len(features_dlq)) == (len(rows), len(BAD_LINES), 2)
    counters = read_counters(client, common.redis_namespace)
    assert counters["events_in"] == summary.events_in == ingested.sent + len(FOREIGN)
    assert counters["samples_out"] == stored and counters["dead_letters"] == len(features_dlq)
    assert counters.get("duplicates_skipped", 0) == 0
    assert read_gaps(client, common.redis_namespace) == []

    # the stored samples are the sample's rows (labels in the same multiset)
    labels = np.concatenate([b.samples.label for b in blocks])
    parsed = RowParser.for_schema(CRITEO).parse(rows)
    assert not parsed.bad and int(labels.sum()) == int(parsed.raw.label.sum())

    # ingest's dead letters: one per bad line, with its file position and bytes
    assert {d.stage for d in ingest_dlq} == {"ingest"}
    by_line = {d.position.line: d for d in ingest_dlq if isinstance(d.position, FilePosition)}
    assert sorted(by_line) == [len(rows) + 1 + i for i in range(len(BAD_LINES))]
    for i, (line, kind) in enumerate(BAD_LINES):
        letter = by_line[len(rows) + 1 + i]
        assert letter.raw == line and letter.kind.startswith(kind), letter.reason
    # features' dead letters: the foreign records, with their topic position
    assert {d.stage for d in features_dlq} == {"features"}
    assert sorted(d.raw for d in features_dlq) == sorted(FOREIGN)
    positions = [d.position for d in features_dlq]
    assert all(isinstance(p, TopicPosition) and p.topic == common.topic_events for p in positions)
    client.close()
