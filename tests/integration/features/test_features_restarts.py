"""Chaos: the features worker across a broker restart, Redis restarts and a Redis outage.

Real processes on loopback ports, exact counts. Each test owns the service it breaks (a broker
or a Redis of its own); the shared session services are used only for what stays up.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis

from infra.services import RunningService, free_port, start_service
from infra.services.redis_server import redis_server_binary
from stages.common import keys
from stages.common.gaps import TopicResetRecord
from stages.common.rows import RowParser
from stages.common.schema import load_schema
from stages.common.settings import CommonSettings, load_settings
from stages.features.readback import read_blocks, read_counters, read_gaps
from stages.features.runner import FeaturesSummary, run_features
from stages.features.settings import FeaturesSettings

from .conftest import create_topic, produce, wait_for

CRITEO = load_schema("criteo")

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BASE_MS = 1_700_000_000_000


def _features(common: CommonSettings, **overrides: object) -> FeaturesSettings:
    values: dict[str, object] = {
        "group": f"{common.redis_namespace}-features",
        "dlq_topic": f"{common.redis_namespace}.features.dlq",
        "stats_interval_s": 1,
        "log_interval_s": 2,
        "batch_max": 500,
    }
    values.update(overrides)
    return load_settings(FeaturesSettings, **values)


@dataclass
class Background:
    """run_features in a thread until `stop` is set; `result` or `error` afterwards."""

    thread: threading.Thread
    stop: threading.Event
    result: dict[str, FeaturesSummary | BaseException]

    def finish(self, timeout_s: float = 120) -> FeaturesSummary:
        self.stop.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the features worker did not stop"
        if "error" in self.result:
            raise AssertionError(f"the worker failed: {self.result['error']!r}")
        summary = self.result["summary"]
        assert isinstance(summary, FeaturesSummary)
        return summary


def _in_background(common: CommonSettings, settings: FeaturesSettings) -> Background:
    stop = threading.Event()
    result: dict[str, FeaturesSummary | BaseException] = {}

    def run() -> None:
        try:
            result["summary"] = run_features(common, settings, stop=stop)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return Background(thread, stop, result)


def _events(rows: list[bytes], first: int, n: int, tag: str) -> list[tuple[bytes, bytes]]:
    """Events first .. first+n-1; event i has event_time_ms BASE_MS + i (its identity)."""
    from stages.common.events import encode_event

    return [
        (f"{tag}:{i}".encode(), encode_event(f"{tag}:{i}", BASE_MS + i, rows[i % len(rows)]))
        for i in range(first, first + n)
    ]


def _stored_times(client: redis.Redis, ns: str) -> np.ndarray:
    blocks = read_blocks(client, ns)
    if not blocks:
        return np.zeros(0, np.int64)
    return np.concatenate([b.samples.event_time_ms for b in blocks]) - BASE_MS


def _kill(pid: int) -> None:
    """SIGKILL the service's whole process group (the service and its log wrapper, whose pid
    is the group's id), and wait until it is gone."""
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# (a) the broker restarts empty between two runs


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Callable[[], RunningService]]:
    """start() -> a broker of this test alone on one fixed port (each call: a fresh one)."""
    port = free_port()
    started: list[RunningService] = []

    def start() -> RunningService:
        broker = start_service("kafka", port, tmp_path / f"kafka{len(started)}")
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


def _rows_file(criteo_sample: Path, tmp_path: Path, name: str, lo: int, hi: int) -> Path:
    rows = gzip.decompress(criteo_sample.read_bytes()).splitlines()[lo:hi]
    path = tmp_path / name
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def test_broker_restarted_empty_between_runs_stores_every_new_event_once(
    criteo_sample: Path,
    tmp_path: Path,
    own_broker: Callable[[], RunningService],
    make_settings: Callable[..., CommonSettings],
) -> None:
    from stages.ingest.run import run_ingest
    from stages.ingest.settings import IngestSettings

    broker = own_broker()
    common = make_settings("redis", kafka_bootstrap=broker.url)
    features = _features(common)
    ingest = load_settings(IngestSettings, linger_ms=5)
    # Two files: an ingest that keeps its source position must not see the second as a re-run.
    first = _rows_file(criteo_sample, tmp_path, "first.tsv", 0, 1000)
    second = _rows_file(criteo_sample, tmp_path, "second.tsv", 1000, 2000)

    sent1 = run_ingest(common, ingest, first, progress=False)
    run1 = run_features(common, features, max_idle_s=4)
    _kill(broker.pid)
    broker = own_broker()  # same port, nothing in it
    assert broker.url == common.kafka_bootstrap
    sent2 = run_ingest(common, ingest, second, progress=False)
    run2 = run_features(common, features, max_idle_s=4)

    client = redis.Redis.from_url(common.redis_url)
    ns = common.redis_namespace
    blocks = read_blocks(client, ns)
    stored = sum(len(b.samples) for b in blocks)
    counters = read_counters(client, ns)
    print(
        f"broker restart: sent {sent1.sent}+{sent2.sent}, stored {stored}, runs "
        f"{run1.events_in}+{run2.events_in} events, duplicates "
        f"{counters.get('duplicates_skipped', 0)}, topic resets {counters.get('topic_resets')}"
    )
    assert (sent1.sent, sent2.sent) == (1000, 1000)
    assert stored == 2000, f"{stored} samples stored for 2000 events"
    assert counters["events_in"] == counters["samples_out"] + counters["dead_letters"] == 2000
    assert (run1.events_in, run2.events_in) == (1000, 1000)
    assert run2.events_in == run2.samples_out + run2.dead_letters
    assert counters.get("duplicates_skipped", 0) == 0
    # the samples are the two files' rows
    labels = np.concatenate([b.samples.label for b in blocks])
    rows = first.read_bytes().splitlines() + second.read_bytes().splitlines()
    parsed = RowParser.for_schema(CRITEO).parse(rows)
    assert not parsed.bad and int(labels.sum()) == int(parsed.raw.label.sum())
    # the reset is counted, logged in gaps, and named by the worker
    assert counters["topic_resets"] == 1 and run2.topic_resets == 1 and run1.topic_resets == 0
    resets = [g for g in read_gaps(client, ns) if isinstance(g, TopicResetRecord)]
    assert len(resets) == 1 and resets[0].topic == common.topic_events
    assert resets[0].stored_offsets == 1000 and resets[0].old_topic_id != resets[0].new_topic_id
    assert [g for g in read_gaps(client, ns) if not isinstance(g, TopicResetRecord)] == []
    client.close()


def test_broker_restarted_empty_under_a_running_worker_stores_every_new_event_once(
    tmp_path: Path,
    own_broker: Callable[[], RunningService],
    make_settings: Callable[..., CommonSettings],
    criteo_rows: list[bytes],
) -> None:
    broker = own_broker()
    common = make_settings("redis", kafka_bootstrap=broker.url)
    ns, topic = common.redis_namespace, common.topic_events
    create_topic(broker.url, topic)
    client = redis.Redis.from_url(common.redis_url)
    worker = _in_background(common, _features(common))
    try:
        produce(broker.url, topic, _events(criteo_rows, 0, 2000, ns))
        wait_for(lambda: len(_stored_times(client, ns)) >= 2000, 120, "2000 stored")
        _kill(broker.pid)
        broker = own_broker()
        create_topic(broker.url, topic)
        # More events than before, so the worker's old positions are valid offsets of the new
        # incarnation: reading on from them would skip its first 2000 events.
        produce(broker.url, topic, _events(criteo_rows, 2000, 3000, ns))
        wait_for(lambda: len(_stored_times(client, ns)) >= 5000, 180, "5000 stored")
        time.sleep(3)  # anything stored twice would arrive now
    finally:
        summary = worker.finish()
    times = _stored_times(client, ns)
    counters = read_counters(client, ns)
    print(f"broker restart under the worker: stored {len(times)}, summary {summary}")
    assert len(times) == 5000 and len(np.unique(times)) == 5000
    assert sorted(times.tolist()) == list(range(5000))
    assert counters["events_in"] == counters["samples_out"] + counters["dead_letters"] == 5000
    assert counters["topic_resets"] == 1
    client.close()


# ---------------------------------------------------------------------------------------------
# (b), (c): a Redis of the test's own (redis-server or valkey-server, append-only file)


class OwnRedis:
    """A redis-server on a fixed port; `persist`: an fsync'ed append-only file, so that a
    SIGKILL loses nothing (a restart brings the data back); else a restart starts empty."""

    def __init__(self, directory: Path, persist: bool) -> None:
        self.port = free_port()
        self.directory = directory
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        durable = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else [
            "--appendonly", "no"
        ]
        argv = [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--save", "", *durable]
        with open(self.directory / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.RedisError:
                return False

        wait_for(up, 30, "redis-server to answer")
        client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[[bool], OwnRedis]]:
    made: list[OwnRedis] = []

    def make(persist: bool) -> OwnRedis:
        server = OwnRedis(tmp_path / f"redis{len(made)}", persist)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop()


def test_redis_restarted_empty_under_and_between_runs(
    own_redis: Callable[[bool], OwnRedis],
    make_settings: Callable[..., CommonSettings],
    criteo_rows: list[bytes],
) -> None:
    server = own_redis(False)
    common = make_settings("kafka", redis_url=server.url)
    ns, topic = common.redis_namespace, common.topic_events
    create_topic(common.kafka_bootstrap, topic)
    client = redis.Redis.from_url(server.url)
    epoch_key = keys.store_epoch(ns)

    # under a running worker
    worker = _in_background(common, _features(common))
    try:
        produce(common.kafka_bootstrap, topic, _events(criteo_rows, 0, 2000, ns))
        wait_for(lambda: len(_stored_times(client, ns)) >= 2000, 120, "2000 stored")
        epoch1 = client.get(epoch_key)
        server.kill()
        server.start()  # empty
        produce(common.kafka_bootstrap, topic, _events(criteo_rows, 2000, 3000, ns))
        wait_for(lambda: len(_stored_times(client, ns)) >= 3000, 120, "3000 stored after")
        time.sleep(2)
    finally:
        summary = worker.finish()
    times = _stored_times(client, ns)
    counters = read_counters(client, ns)
    epoch2 = client.get(epoch_key)
    print(f"redis restart under the worker: stored after it {len(times)}, summary {summary}")
    assert sorted(times.tolist()) == list(range(2000, 5000)), "each event after it, once"
    assert counters["events_in"] == counters["samples_out"] + counters["dead_letters"] == 3000
    assert summary.store_resets == 1 and counters["store_resets"] == 1
    assert epoch1 and epoch2 and epoch1 != epoch2

    # between runs: the next worker goes on from its committed Kafka position
    server.kill()
    server.start()
    produce(common.kafka_bootstrap, topic, _events(criteo_rows, 5000, 1000, ns))
    summary = run_features(common, _features(common), max_idle_s=4)
    times = _stored_times(client, ns)
    print(f"redis restart between runs: stored {len(times)}, summary {summary}")
    assert sorted(times.tolist()) == list(range(5000, 6000))
    assert summary.events_in == 1000 and summary.duplicates_skipped == 0
    epoch3 = client.get(epoch_key)
    assert epoch3 and epoch3 != epoch2
    client.close()


OUTAGE_S = 30.0  # issue 12: Redis down 30 s (the worker retries for redis_retry_s, 120 s)


def test_redis_down_while_the_worker_runs_loses_and_duplicates_nothing(
    own_redis: Callable[[bool], OwnRedis],
    make_settings: Callable[..., CommonSettings],
    criteo_rows: list[bytes],
) -> None:
    server = own_redis(True)
    common = make_settings("kafka", redis_url=server.url)
    ns, topic = common.redis_namespace, common.topic_events
    create_topic(common.kafka_bootstrap, topic)
    client = redis.Redis.from_url(server.url)
    worker = _in_background(common, _features(common, redis_socket_timeout_s=2))
    try:
        produce(common.kafka_bootstrap, topic, _events(criteo_rows, 0, 2000, ns))
        wait_for(lambda: len(_stored_times(client, ns)) >= 2000, 120, "2000 stored")
        epoch = client.get(keys.store_epoch(ns))
        server.kill()
        down_at = time.monotonic()
        produce(common.kafka_bootstrap, topic, _events(criteo_rows, 2000, 3000, ns))
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        assert worker.thread.is_alive(), f"the worker died with Redis: {worker.result}"
        server.start()  # the append-only file brings the data back
        wait_for(lambda: len(_stored_times(client, ns)) >= 5000, 120, "5000 stored")
        time.sleep(2)
    finally:
        summary = worker.finish()
    times = _stored_times(client, ns)
    counters = read_counters(client, ns)
    print(f"redis down {OUTAGE_S:.0f} s: stored {len(times)}, summary {summary}")
    assert sorted(times.tolist()) == list(range(5000))
    assert counters["events_in"] == counters["samples_out"] + counters["dead_letters"] == 5000
    blocks = read_blocks(client, ns)
    assert [b.seq for b in blocks] == list(range(1, len(blocks) + 1))
    assert summary.redis_retries > 0 and summary.store_resets == 0
    assert client.get(keys.store_epoch(ns)) == epoch
    client.close()


PAUSE_S = 30.0  # issue 12: 5x the 6 s session timeout, the group expires and rebalances


def test_broker_paused_while_the_worker_runs_loses_and_duplicates_nothing(
    own_broker: Callable[[], RunningService],
    make_settings: Callable[..., CommonSettings],
    criteo_rows: list[bytes],
) -> None:
    broker = own_broker()
    common = make_settings("redis", kafka_bootstrap=broker.url)
    ns, topic = common.redis_namespace, common.topic_events
    create_topic(broker.url, topic)
    client = redis.Redis.from_url(common.redis_url)
    worker = _in_background(common, _features(common))
    try:
        produce(broker.url, topic, _events(criteo_rows, 0, 2000, ns))
        wait_for(lambda: len(_stored_times(client, ns)) >= 2000, 120, "2000 stored")
        # Paused right after more events arrived: fetches and offset commits in flight hang.
        produce(broker.url, topic, _events(criteo_rows, 2000, 1500, ns))
        os.killpg(broker.pid, signal.SIGSTOP)
        try:
            time.sleep(PAUSE_S)
            assert worker.thread.is_alive(), f"the worker died: {worker.result}"
        finally:
            os.killpg(broker.pid, signal.SIGCONT)
        produce(broker.url, topic, _events(criteo_rows, 3500, 1500, ns))
        wait_for(lambda: len(_stored_times(client, ns)) >= 5000, 120, "5000 stored")
        time.sleep(2)
    finally:
        summary = worker.finish()
    times = _stored_times(client, ns)
    print(f"broker paused {PAUSE_S:.0f} s: stored {len(times)}, summary {summary}")
    assert sorted(times.tolist()) == list(range(5000))
    counters = read_counters(client, ns)
    assert counters["events_in"] == counters["samples_out"] + counters["dead_letters"] == 5000
    assert counters.get("topic_resets", 0) == 0
    client.close()
