"""The embedded broker's memory under the demo's load, with its retention (broker_keeper) or
without (`--baseline`: Tansu started bare, as before).

Starts Tansu and Redis on free loopback ports, then `freshrec features` and `freshrec ingest
--source synthetic --rate R --limit R*60*minutes` as processes (the features worker reads and
commits like in production). Every `--every` seconds: RSS of the Tansu process alone, of the
keeper, of the features worker. After ingest has sent everything, waits until the worker has
stored it and compares what ingest sent (its summary) with what reached Redis (`events_in`),
so records lost by a roll would show. Writes bench/out/broker_memory[-baseline].csv.

    .venv/bin/python bench/broker_memory_bench.py [--minutes 10] [--rate 2000]
        [--memory-mb 256] [--baseline]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.services import free_port, start_service  # noqa: E402
from infra.services.base import LaunchPlan  # noqa: E402
from infra.services.broker_retention import EmbeddedKafkaSettings  # noqa: E402
from infra.services.kafka_broker import KafkaBroker  # noqa: E402
from infra.services.logpipe import wrapped  # noqa: E402

OUT = ROOT / "bench" / "out"


class BareBroker(KafkaBroker):
    """Tansu without the keeper: the launch before retention."""

    def launch(self, port: int, directory: Path) -> LaunchPlan:
        argv = super().launch(port, directory).argv
        return LaunchPlan(argv=argv[argv.index("--") + 1:])


def _proc(pid: int, name: str) -> psutil.Process | None:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for proc in procs:
        if proc.name() == name:
            return proc
    for proc in procs:
        if any(name in arg for arg in proc.cmdline()[:3]):
            return proc
    return None


def _rss_mb(proc: psutil.Process | None) -> float:
    try:
        return proc.memory_info().rss / 1e6 if proc else 0.0
    except psutil.NoSuchProcess:
        return -1.0


def _tree_mb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1e6
    except psutil.NoSuchProcess:
        return -1.0


def _stage(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    freshrec = str(Path(sys.executable).with_name("freshrec"))
    return subprocess.Popen(wrapped([freshrec, *args], log), env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _events_in(url: str) -> int:
    import redis

    store = redis.Redis.from_url(url)
    return sum(int(store.hget(key, "events_in") or 0)
               for key in store.scan_iter(match="freshrec:v1:*:counters"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--every", type=float, default=15.0)
    parser.add_argument("--memory-mb", type=int, default=256)
    parser.add_argument("--baseline", action="store_true", help="Tansu without the keeper")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="freshrec-brokermem-"))
    retention = EmbeddedKafkaSettings(memory_mb=args.memory_mb,
                                      memory_limit_mb=4 * args.memory_mb)
    spec = (BareBroker if args.baseline else KafkaBroker)(retention)
    kafka = start_service(spec, free_port(), work / "kafka")
    redis_service = start_service("redis", free_port(), work / "redis")
    env = {**os.environ, "FRESHREC_STATE_DIR": str(work / "state"),
           "FRESHREC_KAFKA_BOOTSTRAP": kafka.url, "FRESHREC_REDIS_URL": redis_service.url,
           "PYTHONUNBUFFERED": "1"}
    logs = work / "logs"
    logs.mkdir()
    features = _stage(["features"], env, logs / "features.log")
    time.sleep(15)  # the worker joins its group
    limit = int(args.rate * 60 * args.minutes)
    ingest = _stage(["ingest", "--source", "synthetic", "--rate", str(args.rate),
                     "--limit", str(limit), "--quiet"], env, logs / "ingest.log")
    keeper = _proc(kafka.pid, "broker_keeper")
    name = "broker_memory" + ("-baseline" if args.baseline else "")
    t0 = time.monotonic()
    with (OUT / f"{name}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["minute", "rss_tansu_mb", "rss_keeper_mb", "rss_features_mb",
                         "load1"])
        while ingest.poll() is None:
            # Looked up each time: a roll restarts Tansu (a new process).
            tansu = _proc(kafka.pid, "tansu")
            row = [round((time.monotonic() - t0) / 60, 2), _rss_mb(tansu), _rss_mb(keeper),
                   _tree_mb(features.pid), os.getloadavg()[0]]
            writer.writerow(row)
            handle.flush()
            print(" ".join(f"{v:.1f}" for v in row), flush=True)
            time.sleep(args.every)
    sent_line = [ln for ln in (logs / "ingest.log").read_text().splitlines() if "sent" in ln]
    sent = int(re.sub(r"[^0-9]", "", re.search(r"sent[^0-9]*([0-9,]+)",
                                                sent_line[-1]).group(1))) if sent_line else limit
    stored, quiet = _events_in(redis_service.url), time.monotonic()
    while time.monotonic() - quiet < 30:  # until the worker has stored nothing new for 30 s
        time.sleep(5)
        now = _events_in(redis_service.url)
        if now != stored:
            stored, quiet = now, time.monotonic()
    rolls = (work / "kafka" / "server.log").read_text().count("restarted it empty")
    print(f"\n{name}: ingest sent {sent:,}, features stored {stored:,} "
          f"(missing {sent - stored:,}); rolls {rolls}; load {os.getloadavg()}")
    features.send_signal(signal.SIGINT)
    features.wait(60)
    kafka.stop()
    redis_service.stop()
    print(f"work dir {work}")


if __name__ == "__main__":
    main()
