"""Events topic -> Redis feature store, exactly once, on the real broker and redis-server."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import redis

from stages.common.dead_letter import DeadLetterRecord, TopicPosition
from stages.common.events import encode_event
from stages.features.core import default_codec
from stages.features.readback import read_blocks, read_counters, read_stats, read_watermarks

from .conftest import Services, create_topic, produce, start_worker, wait_for, worker_env

pytestmark = pytest.mark.integration
BASE_MS = 1_700_000_000_000


def _events(rows: list[bytes], n: int, unique: str) -> list[tuple[bytes, bytes]]:
    """n events cycling over `rows`; event i has event_time_ms BASE_MS + i (its identity)."""
    out = []
    for i in range(n):
        event = f"t{unique}:{i}"
        out.append((event.encode(), encode_event(event, BASE_MS + i, rows[i % len(rows)])))
    return out


def _check_store(services: Services, ns: str, topic: str, rows: list[bytes], n: int) -> dict:
    client = redis.Redis.from_url(services.redis)
    blocks = read_blocks(client, ns)
    ts = np.concatenate([b.samples.event_time_ms for b in blocks]) - BASE_MS
    assert len(ts) == n, f"{len(ts)} samples stored for {n} events"
    assert len(np.unique(ts)) == n, "a sample was stored twice"
    seqs = [b.seq for b in blocks]
    assert seqs == list(range(1, len(blocks) + 1)), "block seq numbers must be 1, 2, 3, ..."
    counters = read_counters(client, ns)
    assert counters["events_in"] == counters["samples_out"] + counters["dead_letters"]
    for p in range(4):
        key = f"{topic}:{p}"
        assert counters[f"events_in:{key}"] == (
            counters[f"samples_out:{key}"] + counters[f"dead_letters:{key}"]
        )
    # Rows are the schema's transform of the same events, in blocks carrying its hash.
    codec = default_codec()
    assert {b.schema_hash for b in blocks} == {codec.schema_hash}
    order = np.argsort(ts, kind="stable")
    stored_ids = np.concatenate([b.samples.ids for b in blocks])[order]
    stored_label = np.concatenate([b.samples.label for b in blocks])[order]
    raw = codec.parser.parse([rows[i % len(rows)] for i in range(n)]).raw
    expected = codec.samples_of(raw, BASE_MS + np.arange(n, dtype=np.int64))
    assert np.array_equal(stored_ids, expected.ids)
    assert np.array_equal(stored_label, expected.label)
    return counters


def _summary(log: Path) -> dict:
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
    assert lines, f"no summary in the worker log:\n{log.read_text()[-3000:]}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("consumer", ["batch", "stream"])
def test_every_event_becomes_exactly_one_sample(
    services: Services, unique: str, tmp_path: Path, criteo_rows: list[bytes], consumer: str
) -> None:
    env = worker_env(services, unique, tmp_path, consumer=consumer)
    topic, ns = env["FRESHREC_TOPIC_EVENTS"], env["FRESHREC_REDIS_NAMESPACE"]
    create_topic(services.kafka, topic)
    events = _events(criteo_rows, len(criteo_rows), unique)
    bad = [
        (b"bad:%d" % i,
         encode_event(f"bad:{i}", 0, criteo_rows[i]).replace(b"\t0\t", b"\tnot-a-time\t", 1))
        for i in range(3)
    ]
    produce(services.kafka, topic, events + bad)
    log = tmp_path / "worker.log"
    proc = start_worker(env, log, "--max-idle-s", "3")
    assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    counters = _check_store(services, ns, topic, criteo_rows, len(events))
    assert counters["events_in"] == len(events) + 3 and counters["dead_letters"] == 3
    assert counters.get("duplicates_skipped", 0) == 0
    summary = _summary(log)
    assert summary["events_in"] == len(events) + 3 and summary["samples_out"] == len(events)
    version, stats = read_stats(redis.Redis.from_url(services.redis), ns)
    assert version >= 1 and stats.rows == len(events)
    _check_dead_letters(services, env["FRESHREC_FEATURES_DLQ_TOPIC"], topic)


def _check_dead_letters(services: Services, dlq: str, topic: str) -> None:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": services.kafka, "group.id": f"read-{dlq}",
         "auto.offset.reset": "earliest", "session.timeout.ms": 6000}
    )
    consumer.subscribe([dlq])
    got = []
    try:
        wait_for(lambda: got.extend(consumer.consume(10, 0.5)) or len(got) >= 3, 60, "3 DLQ records")
    finally:
        consumer.close()
    letters = [DeadLetterRecord.parse(m.value()) for m in got if m.error() is None]
    assert {(d.stage, d.kind) for d in letters} == {("features", "bad event_time_ms")}
    assert {d.position.topic for d in letters if isinstance(d.position, TopicPosition)} == {topic}
    assert all(d.raw.split(b"\t")[2] == d.key and d.key.startswith(b"bad:") for d in letters)


def test_sigkill_mid_stream_and_restart_leaves_no_duplicate(
    services: Services, unique: str, tmp_path: Path, criteo_rows: list[bytes]
) -> None:
    env = worker_env(services, unique, tmp_path, batch_max="500")
    topic, ns = env["FRESHREC_TOPIC_EVENTS"], env["FRESHREC_REDIS_NAMESPACE"]
    n = 3 * len(criteo_rows)
    create_topic(services.kafka, topic)
    produce(services.kafka, topic, _events(criteo_rows, n, unique))
    client = redis.Redis.from_url(services.redis)
    log = tmp_path / "worker.log"
    first = start_worker(env, log)
    try:
        wait_for(lambda: read_counters(client, ns).get("events_in", 0) >= 2000, 120,
                 "the first worker to store 2000 events")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    stored = read_counters(client, ns)["events_in"]
    assert stored < n, "the worker finished before it was killed: make the stream longer"
    second = start_worker(env, log, "--max-idle-s", "3")
    assert second.wait(timeout=240) == 0, log.read_text()[-3000:]
    counters = _check_store(services, ns, topic, criteo_rows, n)
    assert counters["events_in"] == n
    assert sum(read_watermarks(client, ns, topic).values()) == n
    skipped = counters.get("duplicates_skipped", 0)
    print(f"killed after {stored} events; duplicates skipped on restart: {skipped}")
    # A worker of a new group has no committed offsets and replays the whole topic: the
    # watermarks must skip every event (and the overlapping micro-batches) exactly.
    replay = start_worker({**env, "FRESHREC_FEATURES_GROUP": f"replay{unique}"}, log,
                          "--max-idle-s", "3")
    assert replay.wait(timeout=240) == 0, log.read_text()[-3000:]
    counters = _check_store(services, ns, topic, criteo_rows, n)
    assert counters["events_in"] == n
    assert counters["duplicates_skipped"] == skipped + n


def test_two_workers_split_the_partitions(
    services: Services, unique: str, tmp_path: Path, criteo_rows: list[bytes]
) -> None:
    env = worker_env(services, unique, tmp_path, batch_max="500")
    topic, ns = env["FRESHREC_TOPIC_EVENTS"], env["FRESHREC_REDIS_NAMESPACE"]
    create_topic(services.kafka, topic)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for log in logs:
            workers.append(start_worker(env, log, "--max-idle-s", "6"))

        def split_evenly() -> bool:
            last = []
            for log in logs:
                lines = [ln for ln in log.read_text().splitlines() if "assigned partitions" in ln]
                last.append(lines[-1] if lines else "")
            return all(ln.count(",") == 1 for ln in last)  # "[0, 1]": two partitions each

        wait_for(split_evenly, 90, "both workers to hold two partitions")
        n = 2 * len(criteo_rows)
        produce(services.kafka, topic, _events(criteo_rows, n, unique))
        for w, log in zip(workers, logs):
            assert w.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    _check_store(services, ns, topic, criteo_rows, n)
    summaries = [_summary(log) for log in logs]
    assert all(s["events_in"] > 0 for s in summaries), summaries
    assert sum(s["events_in"] for s in summaries) == n
