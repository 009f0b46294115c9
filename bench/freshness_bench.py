"""Freshness: from an event entering Kafka to a servable version that trained on it being
under the alias `latest` (the newest registered version), p50 and p95, in the demo settings.

Starts Tansu, redis-server and an MLflow server on free loopback ports, then runs the stages as
separate processes, the way their deployments run them: `freshrec features`, `freshrec train`
(demo window settings), `freshrec publish --interval 5` and `freshrec ingest --source FILE
--loop --rate R` over the real Criteo sample (for files, an event's time is the wall-clock time
ingest read it, so event time = time entering the pipeline, a slight over-estimate). A watcher
polls the registry every 0.25 s and records when each version first appears and the newest event
time it trained on (`freshrec.max_event_time_ms`). Each ingested event's freshness is the first
sighting of a version covering it minus its ingest time (stages.publish.core.freshness).
Events are placed on the ingest timeline at the steady rate the token bucket enforces.

    .venv/bin/python bench/freshness_bench.py [--seconds 120] [--rate 1500]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.demo import DEMO_ENV as DEMO_SETTINGS  # noqa: E402
from infra.services import free_port, start_service  # noqa: E402
from stages.common.settings import CommonSettings, load_settings  # noqa: E402
from stages.publish.core.freshness import freshness  # noqa: E402
from stages.publish.watch import watch_alias  # noqa: E402

DEMO_ENV = {**DEMO_SETTINGS, "FRESHREC_PUBLISH_SERVE_POLL_S": "2"}
CRITEO = ROOT.parent / "shared" / "data" / "criteo" / "criteo_sample_10k.tsv.gz"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="ingest duration")
    parser.add_argument("--rate", type=float, default=1500.0, help="events per second")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds after ingest ends")
    args = parser.parse_args()
    if not CRITEO.is_file():
        sys.exit(f"the Criteo sample is absent: {CRITEO}")
    work = Path(tempfile.mkdtemp(prefix="freshrec-freshness-"))
    services = [
        start_service(name, free_port(), work / name) for name in ("kafka", "redis", "mlflow")
    ]
    kafka, redis, mlflow = (s.url for s in services)
    env = {
        **os.environ,
        **DEMO_ENV,
        "FRESHREC_STATE_DIR": str(work / "state"),
        "FRESHREC_KAFKA_BOOTSTRAP": kafka.removeprefix("kafka://").removeprefix("tcp://"),
        "FRESHREC_REDIS_URL": redis,
        "FRESHREC_MLFLOW_TRACKING_URI": mlflow,
        "TF_USE_LEGACY_KERAS": "1",
    }
    common = load_settings(
        CommonSettings,
        kafka_bootstrap=env["FRESHREC_KAFKA_BOOTSTRAP"],
        redis_url=redis,
        mlflow_tracking_uri=mlflow,
        state_dir=work / "state",
    )
    stop = threading.Event()
    sightings: list = []
    watcher = threading.Thread(
        target=lambda: sightings.extend(watch_alias(common, "latest", stop, 0.25)), daemon=True
    )
    stages = [
        _stage(["features"], env, work / "features.log"),
        _stage(["train"], env, work / "train.log"),
        _stage(["publish", "--interval", "5"], env, work / "publish.log"),
    ]
    watcher.start()
    try:
        time.sleep(20)  # let the worker join its group and the trainer load TensorFlow
        t0 = int(time.time() * 1000)
        ingest = _stage(
            ["ingest", "--source", str(CRITEO), "--loop", "--rate", str(args.rate), "--quiet"],
            env,
            work / "ingest.log",
        )
        time.sleep(args.seconds)
        _stop(ingest)
        t1 = int(time.time() * 1000)
        time.sleep(args.drain)
    finally:
        for process in reversed(stages):
            _stop(process)
        stop.set()
        watcher.join(10)
        for service in services:
            service.stop()
    sent = int(args.rate * (t1 - t0) / 1000)
    times = np.linspace(t0, t1, num=max(sent, 2)).astype(np.int64)
    report = freshness(times, times, sightings)
    print(f"versions seen: {len(sightings)}; events: {len(times):,}; uncovered: {report.uncovered}")
    print(f"freshness p50 = {report.p50_s} s, p95 = {report.p95_s} s (goal: p50 < 60 s)")
    _write(args, report, len(sightings), len(times))


def _write(args: argparse.Namespace, report, versions: int, events: int) -> None:  # type: ignore[no-untyped-def]
    load = os.getloadavg()
    text = f"""# Freshness benchmark

Command: `.venv/bin/python bench/freshness_bench.py --seconds {args.seconds:g} --rate {args.rate:g}`
({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC), 2-core VM, load average at the end
{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.

What is measured: events enter Kafka through `freshrec ingest` (the real Criteo sample on
`--loop`, {args.rate:g} events/s for {args.seconds:g} s); `freshrec features`, `freshrec train`
(demo settings: windows of 4,096 samples or 5 s, an export after every window) and `freshrec
publish --interval 5` run as separate processes against Tansu, redis-server and an MLflow
server on loopback ports. A watcher polls the registry every 0.25 s and notes when each new
version appears (`latest` = the newest version, what `freshrec serve --alias latest` loads)
and the newest event time it trained on. An event's freshness = first sighting of a version
that covers it - the event's ingest time. Serving adds its poll interval (2 s) plus a download
(about 1 s for a delta, see RESULTS-publish.md) on top.

| events | versions seen | events not yet covered at the end | p50 | p95 |
|---|---|---|---|---|
| {events:,} | {versions} | {report.uncovered:,} | {report.p50_s:.1f} s | {report.p95_s:.1f} s |

Goal: p50 under 60 s.
"""
    (ROOT / "bench" / "RESULTS-freshness.md").write_text(text)


if __name__ == "__main__":
    main()
