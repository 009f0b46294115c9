"""Soak: the whole pipeline at the demo's rate for 30+ minutes; is memory, disk and registry
size flat after warm-up?

Starts the embedded Kafka-protocol broker, Redis and an MLflow server on free loopback ports
(their logs rotate: infra/services/logpipe.py), then the stages as separate processes the way
their deployments run them, each under the same rotating log wrapper: `freshrec features`,
`freshrec train` and `freshrec publish --interval 5` with the demo's settings (flows/demo.py
DEMO_ENV: windows of 4,096 samples or 5 s, an export every window, every 5th version full),
`freshrec serve --alias latest` (hot-swapping every new version) and `freshrec ingest --source
synthetic --rate 2000`. Retention runs with its defaults (FRESHREC_PUBLISH_KEEP_VERSIONS=50,
FRESHREC_PUBLISH_KEEP_TRAINER_EXPORTS=3) unless the environment says otherwise.

The broker is started like `freshrec infra up` starts it (KafkaBroker.launch: Tansu as the child
of infra/services/broker_keeper.py, with FRESHREC_KAFKA_MEMORY_MB / _LIMIT_MB from the
environment); the sample stream's retention is the features worker's own
(FRESHREC_FEATURES_RETENTION_MB).

Every `--every` seconds it samples: RSS of each stage and each service (the whole process tree;
for the broker also the keeper and the Tansu child apart, and how many times Tansu was
restarted), disk use of the state dir, of MLflow's artifact dir (registry versions `publish/` and
trainer exports `exports/` apart) and of all log files, Redis `used_memory`, the sample stream's
byte total (`samples:bytes`) and length, the registry's version count, the features worker's
`events_in` and the load average. Writes bench/out/soak.csv and bench/out/soak.png, and prints,
per series, the growth in the last `--window` minutes against the first part.

At the end ingest stops first; once the features worker has stored nothing new for 30 s the
bench compares what ingest sent (its summary line) with the worker's counters: events in =
samples stored + dead letters + duplicates dropped, and sent = events in (nothing lost through
the broker's restarts). Written to bench/out/soak.events.json.

    .venv/bin/python bench/soak_bench.py [--minutes 35] [--rate 2000] [--every 30]
"""

from __future__ import annotations

import argparse
import csv
import json
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

from flows.demo import DEMO_ENV  # noqa: E402
from infra.services import free_port, start_service  # noqa: E402
from infra.services.logpipe import wrapped  # noqa: E402
from stages.common import keys  # noqa: E402
from stages.features.store import stream_bytes_key  # noqa: E402

OUT = ROOT / "bench" / "out"
STAGES = ("features", "train", "publish", "serve", "ingest")
SERVICES = ("kafka", "redis", "mlflow")


def _stage(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    freshrec = str(Path(sys.executable).with_name("freshrec"))
    return subprocess.Popen(
        wrapped([freshrec, *args], log), env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes], grace_s: float = 60) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def tree_rss(pid: int) -> int:
    """RSS in bytes of `pid` and all its descendants (0 when gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def broker_parts(pid: int) -> tuple[psutil.Process | None, psutil.Process | None]:
    """The keeper and its Tansu child under the kafka service's wrapper `pid`."""
    keeper = tansu = None
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None, None
    for proc in procs:
        try:
            if proc.name() == "tansu":
                tansu = proc
            elif any("broker_keeper" in arg for arg in proc.cmdline()[:4]):
                keeper = proc
        except psutil.NoSuchProcess:
            continue
    return keeper, tansu


def rss_of(proc: psutil.Process | None) -> int:
    try:
        return proc.memory_info().rss if proc is not None else 0
    except psutil.NoSuchProcess:
        return 0


def disk(path: Path, match: str | None = None) -> int:
    """Bytes of the files under `path` (those with `match` in their path, when given)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            if match is not None and match not in full:
                continue
            try:
                total += os.lstat(full).st_size
            except FileNotFoundError:
                continue
    return total


def log_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            if ".log" in name:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=35.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--window", type=float, default=20.0, help="minutes judged at the end")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="freshrec-soak-"))
    print(f"work dir {work}", flush=True)
    services: dict = {}  # type: ignore[type-arg]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in SERVICES:
            services[name] = start_service(name, free_port(), work / name)
        keeper, tansu = broker_parts(services["kafka"].pid)
        if keeper is None or tansu is None:
            raise SystemExit("the broker did not start under its keeper (broker_keeper + tansu)")
        print(f"broker: keeper pid {keeper.pid} {' '.join(keeper.cmdline()[2:12])}", flush=True)
        mlflow_url = services["mlflow"].url
        env = {
            **os.environ, **DEMO_ENV,
            "FRESHREC_STATE_DIR": str(work / "state"),
            "FRESHREC_KAFKA_BOOTSTRAP": services["kafka"].url.removeprefix("kafka://")
            .removeprefix("tcp://"),
            "FRESHREC_REDIS_URL": services["redis"].url,
            "FRESHREC_MLFLOW_TRACKING_URI": mlflow_url,
            "FRESHREC_PUBLISH_SERVE_POLL_S": "2",
        }
        logs = work / "state" / "logs"
        logs.mkdir(parents=True)
        serve_port = free_port()
        procs["features"] = _stage(["features"], env, logs / "features.log")
        procs["train"] = _stage(["train"], env, logs / "train.log")
        procs["publish"] = _stage(["publish", "--interval", "5"], env, logs / "publish.log")
        time.sleep(20)  # the worker joins its group, the trainer loads TensorFlow
        procs["ingest"] = _stage(["ingest", "--source", "synthetic", "--rate", str(args.rate),
                                  "--quiet"], env, logs / "ingest.log")
        procs["serve"] = _stage(["serve", "--model", "freshrec-ctr", "--alias", "latest",
                                 "--host", "127.0.0.1", "--port", str(serve_port)], env,
                                logs / "serve.log")
        namespace = env.get("FRESHREC_REDIS_NAMESPACE", "default")
        rows = sample_loop(args, work, services, procs, mlflow_url, namespace)
        _stop(procs["ingest"])  # first: the worker drains, then the counts are compared
        account(work, services, logs, namespace, rows)
    finally:
        for name in ("ingest", "serve", "publish", "train", "features"):
            if name in procs and procs[name].poll() is None:
                _stop(procs[name])
        for service in services.values():
            service.stop()
    report(rows, args)


def _counters(store, namespace: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    raw = store.hgetall(keys.counters(namespace))
    return {k.decode(): int(v) for k, v in raw.items() if b":" not in k}


def gap_tally(store, namespace: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Gap lines by kind, plus the offsets missing and the blocks trimmed unread they name."""
    tally: dict[str, int] = {}
    for line in store.lrange(keys.gaps(namespace), 0, -1):
        fields = json.loads(line)
        kind = str(fields.get("kind"))
        tally[kind] = tally.get(kind, 0) + 1
        if kind == "offset_gap":
            tally["offsets_missing"] = (tally.get("offsets_missing", 0)
                                        + int(fields["got"]) - int(fields["expected"]))
        elif kind == "trimmed_blocks":
            tally["blocks_trimmed_unread"] = (tally.get("blocks_trimmed_unread", 0)
                                              + int(fields["blocks"]))
    return tally


def account(work: Path, services, logs: Path, namespace: str,  # type: ignore[no-untyped-def]
            rows: list[dict[str, float]]) -> None:
    """Events ingest sent vs what the features worker counted; bench/out/soak.events.json."""
    import redis

    lines = [ln for ln in (logs / "ingest.log").read_text().splitlines() if " sent " in ln]
    summary = lines[-1] if lines else ""
    found = {k: int(v.replace(",", "")) for k, v in
             re.findall(r"(read|sent|dead-lettered|failed) ([0-9,]+)", summary)}
    store = redis.Redis.from_url(services["redis"].url)
    counters, quiet = _counters(store, namespace), time.monotonic()
    waited = time.monotonic()
    while time.monotonic() - quiet < 30 and time.monotonic() - waited < 600:
        time.sleep(5)  # until the worker has stored nothing new for 30 s (at most 10 min)
        now = _counters(store, namespace)
        if now.get("events_in") != counters.get("events_in"):
            counters, quiet = now, time.monotonic()
    text = ""
    for log in sorted((work / "kafka").glob("server.log*")):
        text += log.read_text(errors="replace")
    result = {
        "ingest_summary": summary,
        "ingest": found,
        "features_counters": counters,
        "drain_s": round(time.monotonic() - waited, 1),
        "gap_records": gap_tally(store, namespace),
        "stream_blocks_end": int(store.xlen(keys.samples_stream(namespace))),
        "broker_rolls_logged": text.count("restarted it empty"),
        "broker_forced_rolls_logged": text.count("restarted it empty anyway"),
        "broker_restarts_seen": int(rows[-1].get("kafka_restarts", 0)),
        "load_end": os.getloadavg(),
    }
    sent, events_in = found.get("sent", -1), counters.get("events_in", 0)
    parts = (counters.get("samples_out", 0) + counters.get("dead_letters", 0)
             + counters.get("duplicates_dropped_by_id", 0))
    result["sent_minus_events_in"] = sent - events_in
    result["events_in_minus_parts"] = events_in - parts
    (OUT / "soak.events.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1), flush=True)


def sample_loop(args, work, services, procs, mlflow_url,  # type: ignore[no-untyped-def]
                namespace):
    import redis
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    store = redis.Redis.from_url(services["redis"].url)
    artifacts = work / "mlflow" / "artifacts"
    path = OUT / "soak.csv"
    tansu_pids: set[int] = set()
    rows: list[dict[str, float]] = []
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    with path.open("w", newline="") as handle:
        writer: csv.DictWriter[str] | None = None
        while True:
            row: dict[str, float] = {"minute": round((time.monotonic() - t0) / 60, 2)}
            for name, proc in procs.items():
                row[f"rss_{name}_mb"] = tree_rss(proc.pid) / 1e6
                if proc.poll() is not None:
                    row[f"rss_{name}_mb"] = -1  # exited: shows in the CSV and the plot
            for name, service in services.items():
                row[f"rss_{name}_mb"] = tree_rss(service.pid) / 1e6
            keeper, tansu = broker_parts(services["kafka"].pid)
            row["rss_kafka_keeper_mb"] = rss_of(keeper) / 1e6
            row["rss_kafka_tansu_mb"] = rss_of(tansu) / 1e6
            if tansu is not None:
                tansu_pids.add(tansu.pid)
            row["kafka_restarts"] = max(0, len(tansu_pids) - 1)
            row["disk_state_mb"] = disk(work / "state") / 1e6
            row["disk_all_mb"] = disk(work) / 1e6
            row["artifacts_publish_mb"] = disk(artifacts, "/publish/") / 1e6
            row["artifacts_exports_mb"] = disk(artifacts, "/exports/") / 1e6
            row["logs_mb"] = log_bytes(work) / 1e6
            try:
                row["redis_used_mb"] = int(store.info("memory")["used_memory"]) / 1e6
            except redis.RedisError:
                row["redis_used_mb"] = -1
            try:
                row["redis_stream_mb"] = int(store.get(stream_bytes_key(namespace)) or 0) / 1e6
                row["redis_stream_blocks"] = int(store.xlen(keys.samples_stream(namespace)))
                row["events_in_k"] = int(store.hget(keys.counters(namespace), "events_in")
                                         or 0) / 1e3
            except redis.RedisError:
                row["redis_stream_mb"] = row["redis_stream_blocks"] = row["events_in_k"] = -1
            try:
                found = client.search_model_versions("name = 'freshrec-ctr'", max_results=1000)
                row["registry_versions"] = len(found)
                row["registry_newest"] = max((int(v.version) for v in found), default=0)
            except Exception:  # noqa: BLE001  # a sample missed is a sample missed
                row["registry_versions"] = row["registry_newest"] = -1
            row["load1"] = os.getloadavg()[0]
            rows.append(row)
            if writer is None:
                writer = csv.DictWriter(handle, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            handle.flush()
            print(" ".join(f"{k}={v:.1f}" for k, v in row.items()), flush=True)
            if time.monotonic() >= end:
                return rows
            time.sleep(max(0.0, min(args.every, end - time.monotonic())))


def report(rows: list[dict[str, float]], args: argparse.Namespace) -> None:
    """Growth per series: over the judged window at the end vs over the first part."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows[0] if k != "minute"]
    minutes = [r["minute"] for r in rows]
    start = minutes[-1] - args.window
    first = [r for r in rows if r["minute"] <= start] or rows[:1]
    last = [r for r in rows if r["minute"] >= start]
    print(f"\n{'series':<24} {'at start':>10} {'at warm-up end':>15} {'at end':>10} "
          f"{'growth/min, last':>17} {'growth/min, first':>18}")
    for key in keys:
        a, b, c = rows[0][key], first[-1][key], rows[-1][key]
        late = (c - last[0][key]) / max(1e-9, rows[-1]["minute"] - last[0]["minute"])
        early = (b - a) / max(1e-9, first[-1]["minute"] - rows[0]["minute"])
        print(f"{key:<24} {a:>10.1f} {b:>15.1f} {c:>10.1f} {late:>17.3f} {early:>18.3f}")
    groups = {
        "RSS of each process tree (MB)": [k for k in keys if k.startswith("rss_")],
        "disk (MB)": [k for k in keys if k.startswith(("disk_", "artifacts_", "logs_"))],
        "Redis used_memory, sample stream bytes (MB)": ["redis_used_mb", "redis_stream_mb"],
        "registry versions": ["registry_versions"],
    }
    fig, axes = plt.subplots(2, 2, figsize=(14, 9), sharex=True)
    for ax, (title, series) in zip(axes.flat, groups.items()):
        for key in series:
            ax.plot(minutes, [r[key] for r in rows], label=key)
        ax.axvline(start, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("minutes")
        ax.legend(fontsize=7)
    fig.suptitle(f"freshrec soak: {args.rate:g} events/s, demo settings, "
                 f"retention defaults ({minutes[-1]:.0f} min; dotted: judged window start)")
    fig.tight_layout()
    fig.savefig(OUT / "soak.png", dpi=90)


if __name__ == "__main__":
    main()
