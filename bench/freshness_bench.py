"""Freshness as served: from an event entering Kafka to `freshrec serve` answering with a
version that trained on it, p50 and p95, in the demo settings, with a per-hop breakdown.

Starts Tansu, redis-server and an MLflow server on free loopback ports, then runs the stages as
separate processes, the way their deployments run them: `freshrec features`, `freshrec train`
and `freshrec publish` (the demo's settings, flows/demo.py DEMO_ENV, and its publish interval),
`freshrec serve --alias latest`, and `freshrec ingest --source FILE --loop --rate R` over the
real Criteo sample (for files, an event's time is the wall-clock time ingest read it). A
watcher asks serving's GET /version every `--watch` seconds and notes when each version is
first answered and the newest event time it trained on (`meta.max_event_time_ms`). An event's
freshness = the first answer with a version covering it - the event's ingest time (its Kafka
message timestamp, read back from the topic at the end; stages.publish.core.freshness).

Hops, from the stages' own log lines (one clock: all on this machine). For an event e served
first by version v, which folded trainer exports up to x:
  export    export x logged - ingest(e)     Kafka -> features -> Redis, the window filling up,
                                            training, writing the export (and waiting for the
                                            next export when v folded several)
  publish   v registered - export x logged  outbox upload, publisher wake-up, fold, register
  serve     serving swapped to v - register serving wake-up, download, apply
  watch     answer seen - swapped           the watcher's resolution
They add up to the event's freshness.

    .venv/bin/python bench/freshness_bench.py [--seconds 90] [--rate 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.demo import DEMO_ENV, DemoOptions  # noqa: E402
from infra.services import free_port, start_service  # noqa: E402
from stages.common.settings import CommonSettings, kafka_client_config, load_settings  # noqa: E402
from stages.publish.core.freshness import AliasSighting, freshness  # noqa: E402

CRITEO = ROOT.parent / "shared" / "data" / "criteo" / "criteo_sample_10k.tsv.gz"
DEMO_PUBLISH_INTERVAL_S = 5.0  # what flows/demo.py passes to the publish deployment
_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
EXPORT_LINE = re.compile(_STAMP + r".*export (\d+) \((?:full|delta)\) at window")
REGISTER_LINE = re.compile(_STAMP + r".*registered v(\d+) \(.*trainer [^/]+/(\d+)\)")
SERVE_LINE = re.compile(_STAMP + r".*now serving \S+ v(\d+)")
HOPS = ("export", "publish", "serve", "watch")


def _stage(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    freshrec = str(Path(sys.executable).with_name("freshrec"))
    return subprocess.Popen(
        [freshrec, *args], env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def _stop(process: subprocess.Popen[bytes], grace_s: float = 60) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def watch_serving(port: int, stop: threading.Event, every_s: float) -> list[AliasSighting]:
    """Ask GET /version every `every_s` s until `stop`; one sighting per version answered."""
    seen: dict[int, AliasSighting] = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    while not stop.is_set():
        try:
            conn.request("GET", "/version")
            body = json.loads(conn.getresponse().read())
            now = int(time.time() * 1000)
            version = body.get("version")
            newest = (body.get("meta") or {}).get("max_event_time_ms")
            if version is not None and newest is not None and int(version) not in seen:
                seen[int(version)] = AliasSighting(int(version), now, int(newest))
        except (OSError, http.client.HTTPException, ValueError):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        stop.wait(every_s)
    conn.close()
    return sorted(seen.values(), key=lambda s: s.seen_ms)


def read_events(common: CommonSettings) -> tuple[np.ndarray, np.ndarray]:
    """(event time, Kafka timestamp) in ms of every event on the events topic, by event time.
    For files ingest stamps a row when it reads it, up to one read chunk before sending it."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**kafka_client_config(common), "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "enable.partition.eof": True})
    meta = consumer.list_topics(common.topic_events, timeout=10)
    parts = list(meta.topics[common.topic_events].partitions)
    consumer.assign([TopicPartition(common.topic_events, p, 0) for p in parts])
    done: set[int] = set()
    stamps: list[tuple[int, int]] = []
    while len(done) < len(parts):
        for msg in consumer.consume(10_000, timeout=5):
            if msg.error() is not None:
                done.add(msg.partition())
                continue
            event_time = int(msg.value().split(b"\t", 3)[2])  # stages.common.events, v1
            stamps.append((event_time, msg.timestamp()[1]))
    consumer.close()
    both = np.asarray(sorted(stamps), dtype=np.int64).reshape(-1, 2)
    return both[:, 0], both[:, 1]


def _log_times(path: Path, pattern: re.Pattern[str]) -> list[tuple[int, int, int]]:
    """(ms, first number, second number or 0) of each log line matching `pattern`."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        match = pattern.match(line)
        if match:
            ms = int(datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() * 1000)
            numbers = [int(g) for g in match.groups()[1:]] + [0]
            found.append((ms, numbers[0], numbers[1]))
    return found


def hop_breakdown(
    event_ms: np.ndarray, ingest_ms: np.ndarray, sightings: list[AliasSighting], work: Path
) -> dict[str, np.ndarray]:
    """Per covered event, the seconds of each hop (see the module docstring)."""
    exported = {seq: ms for ms, seq, _ in _log_times(work / "train.log", EXPORT_LINE)}
    registered = {v: (ms, seq) for ms, v, seq in _log_times(work / "publish.log", REGISTER_LINE)}
    swapped: dict[int, int] = {}
    for ms, v, _ in _log_times(work / "serve.log", SERVE_LINE):
        swapped.setdefault(v, ms)
    ordered = sorted(sightings, key=lambda s: s.seen_ms)
    hops: dict[str, list[float]] = {name: [] for name in HOPS}
    for t, start in zip(event_ms, ingest_ms):
        s = next((s for s in ordered if s.max_event_time_ms >= t and s.seen_ms >= start), None)
        if s is None or s.version not in registered or s.version not in swapped:
            continue
        reg_ms, seq = registered[s.version]
        exp_ms = exported.get(seq)
        if exp_ms is None:
            continue
        points = (start, exp_ms, reg_ms, swapped[s.version], s.seen_ms)
        for name, a, b in zip(HOPS, points, points[1:]):
            hops[name].append((b - a) / 1000.0)
    return {name: np.asarray(v) for name, v in hops.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="ingest duration")
    parser.add_argument("--rate", type=float, default=DemoOptions.rate, help="events per second")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds after ingest ends")
    parser.add_argument("--watch", type=float, default=0.05, help="seconds between /version")
    parser.add_argument("--publish-interval", type=float, default=DEMO_PUBLISH_INTERVAL_S)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--data", type=Path, default=CRITEO, help="the Criteo file to loop")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"the Criteo sample is absent: {args.data}")
    work = Path(tempfile.mkdtemp(prefix="freshrec-freshness-"))
    services = [
        start_service(name, free_port(), work / name) for name in ("kafka", "redis", "mlflow")
    ]
    kafka, redis, mlflow = (s.url for s in services)
    env = {
        **os.environ, **DEMO_ENV,
        "FRESHREC_STATE_DIR": str(work / "state"),
        "FRESHREC_KAFKA_BOOTSTRAP": kafka.removeprefix("kafka://").removeprefix("tcp://"),
        "FRESHREC_REDIS_URL": redis,
        "FRESHREC_MLFLOW_TRACKING_URI": mlflow,
        # ingest stamps a file's rows when it reads them: the smallest read chunk (~300 rows,
        # ~0.15 s at 2,000/s) keeps event time within that of the time the row enters Kafka
        "FRESHREC_INGEST_CHUNK_BYTES": str(64 << 10),
        "PYTHONPATH": str(ROOT),  # the stages run this checkout's code
    }
    common = load_settings(CommonSettings, kafka_bootstrap=env["FRESHREC_KAFKA_BOOTSTRAP"],
                           redis_url=redis, mlflow_tracking_uri=mlflow, state_dir=work / "state")
    port = free_port()
    stop = threading.Event()
    sightings: list[AliasSighting] = []
    watcher = threading.Thread(
        target=lambda: sightings.extend(watch_serving(port, stop, args.watch)), daemon=True
    )
    stages = [
        _stage(["features"], env, work / "features.log"),
        _stage(["train"], env, work / "train.log"),
        _stage(["publish", "--interval", f"{args.publish_interval:g}"], env, work / "publish.log"),
        _stage(["serve", "--alias", "latest", "--port", str(port)], env, work / "serve.log"),
    ]
    watcher.start()
    load_start = os.getloadavg()
    try:
        time.sleep(20)  # let the worker join its group and the trainer load TensorFlow
        ingest = _stage(
            ["ingest", "--source", str(args.data), "--loop", "--rate", str(args.rate), "--quiet"],
            env, work / "ingest.log",
        )
        time.sleep(args.seconds)
        _stop(ingest)
        time.sleep(args.drain)
        load_end = os.getloadavg()
        event_ms, ingest_ms = read_events(common)
    finally:
        for process in reversed(stages):
            _stop(process)
        stop.set()
        watcher.join(10)
        for service in services:
            service.stop()
    report = freshness(event_ms, ingest_ms, sightings)
    hops = hop_breakdown(event_ms, ingest_ms, sightings, work)
    result = {
        "when": f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "command": " ".join(["bench/freshness_bench.py", *sys.argv[1:]]),
        "events": len(event_ms), "served_versions": len(sightings), "uncovered": report.uncovered,
        "p50_s": report.p50_s, "p95_s": report.p95_s,
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in load_end],
        "hops": {name: {"p50_s": float(np.percentile(v, 50)), "p95_s": float(np.percentile(v, 95)),
                        "mean_s": float(v.mean())}
                 for name, v in hops.items() if len(v)},
        "hop_events": int(min((len(v) for v in hops.values()), default=0)),
        "logs": str(work),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
