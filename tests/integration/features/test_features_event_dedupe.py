"""The real ingest re-sends rows under the same event ids (a crash-resume, a --from-start run);
the real features worker stores each event once and counts the copies it dropped:
events in = samples out + dead letters + duplicates dropped by id.

Also: sources that restart at seq 0 on purpose (--loop, the generator) are NOT dropped, and the
topics ingest creates carry the retention settings (what the broker reports back).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from stages.common.settings import CommonSettings, load_settings
from stages.features.core import default_codec
from stages.features.readback import read_blocks, read_counters
from stages.features.runner import FeaturesSummary, run_features
from stages.features.settings import FeaturesSettings
from stages.ingest.position import FileIdentity, position_file
from stages.ingest.run import run_ingest
from stages.ingest.settings import IngestSettings

pytestmark = pytest.mark.integration

ROWS = 3000
RESENT_TAIL = 300  # what a SIGKILLed ingest re-sends: ~0.15 s at 2,000 rows/s
FROM_START = 500
FOREIGN = [b"garbage", b"1\tx:1\tnot-a-time\t0"]  # features dead letters


def _features(common: CommonSettings) -> FeaturesSummary:
    settings = load_settings(
        FeaturesSettings,
        group=f"{common.redis_namespace}-features",
        dlq_topic=f"{common.redis_namespace}.features.dlq",
        stats_interval_s=1,
    )
    return run_features(common, settings, max_idle_s=5)


def _ingest(common: CommonSettings, source: object, **kw: object) -> int:
    summary = run_ingest(
        common, load_settings(IngestSettings, linger_ms=5), source, progress=False, **kw  # type: ignore[arg-type]
    )
    assert summary.failed == 0
    return int(summary.sent)


def _rewind_position(common: CommonSettings, source: Path, lines: int) -> None:
    """What a crash after line `lines` was acknowledged but before later saves leaves."""
    where = position_file(common.state_dir, FileIdentity.of(source))
    saved = json.loads(where.read_text())
    offset = sum(len(line) for line in source.read_bytes().splitlines(keepends=True)[:lines])
    saved.update(lines=lines, seek_line=lines, seek_byte=offset, complete=False)
    where.write_text(json.dumps(saved))


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False})
    for i, value in enumerate(values):
        producer.produce(topic, value, key=b"foreign:%d" % i)
    assert producer.flush(60) == 0


def test_resent_rows_are_stored_once_and_counted(
    criteo_sample: Path, tmp_path: Path, make_settings: Callable[..., CommonSettings]
) -> None:
    common = make_settings("kafka", "redis")
    rows = gzip.decompress(criteo_sample.read_bytes()).splitlines()[:ROWS]
    source = tmp_path / "rows.tsv"
    source.write_bytes(b"\n".join(rows) + b"\n")

    assert _ingest(common, source) == ROWS
    # The last 300 lines' acknowledgement was "lost": the resumed run sends them again.
    _rewind_position(common, source, ROWS - RESENT_TAIL)
    assert _ingest(common, source) == RESENT_TAIL
    # A lost position file: --from-start re-sends from line 1 (cut by --limit here).
    assert _ingest(common, source, from_start=True, limit=FROM_START) == FROM_START
    _produce(common.kafka_bootstrap, common.topic_events, FOREIGN)

    summary = _features(common)
    sent = ROWS + RESENT_TAIL + FROM_START + len(FOREIGN)
    resent = RESENT_TAIL + FROM_START
    assert summary.events_in == sent
    assert (summary.samples_out, summary.dead_letters) == (ROWS, len(FOREIGN))
    assert summary.duplicates_dropped_by_id == resent
    assert summary.events_in == (
        summary.samples_out + summary.dead_letters + summary.duplicates_dropped_by_id
    )
    assert summary.dedupe_unchecked == 0 and summary.duplicates_skipped == 0
    # The features dead-letter topic was created by the worker with the retention settings.
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": common.kafka_bootstrap})
    resource = ConfigResource("TOPIC", f"{common.redis_namespace}.features.dlq")
    (future,) = admin.describe_configs([resource]).values()
    configs = future.result(30)
    assert configs["retention.ms"].value == str(common.topic_retention_ms)
    assert configs["retention.bytes"].value == str(common.topic_retention_bytes)

    client = redis.Redis.from_url(common.redis_url)
    counters = read_counters(client, common.redis_namespace)
    assert counters["events_in"] == sent and counters["samples_out"] == ROWS
    assert counters["duplicates_dropped_by_id"] == resent
    per_partition = [k.split(":", 1)[1] for k in counters if k.startswith("events_in:")]
    for tp in per_partition:
        assert counters[f"events_in:{tp}"] == (
            counters[f"samples_out:{tp}"]
            + counters[f"dead_letters:{tp}"]
            + counters.get(f"duplicates_dropped_by_id:{tp}", 0)
        )
    # Each row of the file is stored exactly once (compared as whole feature rows).
    blocks = read_blocks(client, common.redis_namespace)
    stored = np.concatenate([b.samples.ids for b in blocks])
    codec = default_codec()
    expected = codec.samples_of(codec.parser.parse(rows).raw, np.zeros(len(rows), np.int64)).ids
    assert Counter(map(bytes, stored)) == Counter(map(bytes, expected))
    client.close()


def test_loop_and_generator_runs_are_new_events_not_resends(
    criteo_tiny: Path, make_settings: Callable[..., CommonSettings]
) -> None:
    """Both restart at seq 0 on every run; each run has its own source tag, so nothing is
    dropped."""
    common = make_settings("kafka", "redis")
    sent = 0
    for _run in range(2):
        sent += _ingest(common, "synthetic", limit=400)
        sent += _ingest(common, criteo_tiny, loop=True, limit=1500)  # 1.5 passes
    summary = _features(common)
    assert summary.events_in == summary.samples_out == sent >= 3800 - 2 * 10
    assert summary.duplicates_dropped_by_id == 0 and summary.dedupe_unchecked == 0


def test_created_topics_carry_the_retention_settings(
    criteo_tiny: Path, make_settings: Callable[..., CommonSettings]
) -> None:
    """Tansu 0.6 stores and reports them (it does not delete by them: see
    stages/ingest/kafka.py `ensure_topics`)."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    common = make_settings("kafka", topic_retention_ms=3_600_000, topic_retention_bytes=10 << 20)
    _ingest(common, criteo_tiny, limit=10)
    admin = AdminClient({"bootstrap.servers": common.kafka_bootstrap})
    for topic in (common.topic_events, common.topic_events_dlq):
        (future,) = admin.describe_configs([ConfigResource("TOPIC", topic)]).values()
        configs = future.result(30)
        assert configs["retention.ms"].value == "3600000"
        assert configs["retention.bytes"].value == str(10 << 20)


def _id_batch(offsets: range, seqs: range) -> object:
    """A partition-0 batch of events `d:<seq>` at `offsets` (one seq per offset)."""
    from stages.common.events import encode_event
    from stages.features.core import RecordBatch, split_batch

    row = b"\t".join([b"1", *[b"%d" % i for i in range(13)], *[b"%08x" % i for i in range(26)]])
    values = [encode_event(f"d:{s}", s, row) for s in seqs]
    records = RecordBatch(
        "ev", np.zeros(len(values), np.int32), np.asarray(list(offsets), np.int64),
        [None] * len(values), values,
    )
    (batch,) = split_batch(records).batches
    return batch


def test_two_writers_of_one_partition_never_decide_from_a_stale_state(
    redis_server: str, make_settings: Callable[..., CommonSettings]
) -> None:
    """Writer A caches the partition's event-id state; writer B stores the partition meanwhile
    (a rebalance); A's next write is refused by the script's version guard (MOVED), A reloads
    and drops what B stored. Every id once; the counters balance."""
    import asyncio

    from redis.asyncio import Redis

    from stages.features.core import DedupeConfig
    from stages.features.store import SampleStore

    ns = make_settings().redis_namespace
    config = DedupeConfig(window=1024, max_sources=4)

    async def scenario() -> list[tuple[int, int]]:
        client = Redis.from_url(redis_server)
        try:
            a = SampleStore(client, ns, 1000, dedupe=config)
            b = SampleStore(client, ns, 1000, dedupe=config)
            out = []
            for store, offsets, seqs in (
                (a, range(0, 10), range(0, 10)),
                (b, range(10, 20), range(5, 15)),  # 5..9 re-sent
                (a, range(20, 30), range(10, 20)),  # 10..14 stored by B: A must reload
            ):
                report = await store.write([_id_batch(offsets, seqs)])  # type: ignore[list-item]
                out.append((sum(len(w.samples) for w in report.written), report.dropped_by_id))
            return out
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == [(10, 0), (5, 5), (5, 5)]
    client = redis.Redis.from_url(redis_server)
    counters = read_counters(client, ns)
    assert (counters["events_in"], counters["samples_out"]) == (30, 20)
    assert counters["duplicates_dropped_by_id"] == 10
    client.close()
