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

Every `--every` seconds it samples: RSS of each stage and each service (the whole process tree),
disk use of the state dir, of MLflow's artifact dir (registry versions `publish/` and trainer
exports `exports/` apart) and of all log files, Redis `used_memory`, the registry's version
count. Writes bench/out/soak.csv and bench/out/soak.png, and prints, per series, the growth in
the last `--window` minutes against the first part, and whether it is flat.

    .venv/bin/python bench/soak_bench.py [--minutes 35] [--rate 2000] [--every 30]
"""

from __future__ import annotations

import argparse
import csv
import os
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
    services = {name: start_service(name, free_port(), work / name) for name in SERVICES}
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
    procs = {
        "features": _stage(["features"], env, logs / "features.log"),
        "train": _stage(["train"], env, logs / "train.log"),
        "publish": _stage(["publish", "--interval", "5"], env, logs / "publish.log"),
    }
    time.sleep(20)  # the worker joins its group, the trainer loads TensorFlow
    procs["ingest"] = _stage(["ingest", "--source", "synthetic", "--rate", str(args.rate),
                              "--quiet"], env, logs / "ingest.log")
    procs["serve"] = _stage(["serve", "--model", "freshrec-ctr", "--alias", "latest", "--host",
                             "127.0.0.1", "--port", str(serve_port)], env, logs / "serve.log")
    rows = sample_loop(args, work, services, procs, mlflow_url)
    for name in ("ingest", "serve", "publish", "train", "features"):
        _stop(procs[name])
    for service in services.values():
        service.stop()
    report(rows, args)


def sample_loop(args, work, services, procs, mlflow_url):  # type: ignore[no-untyped-def]
    import redis
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    store = redis.Redis.from_url(services["redis"].url)
    artifacts = work / "mlflow" / "artifacts"
    path = OUT / "soak.csv"
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
                found = client.search_model_versions("name = 'freshrec-ctr'", max_results=1000)
                row["registry_versions"] = len(found)
                row["registry_newest"] = max((int(v.version) for v in found), default=0)
            except Exception:  # noqa: BLE001  # a sample missed is a sample missed
                row["registry_versions"] = row["registry_newest"] = -1
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
        "Redis used_memory (MB)": ["redis_used_mb"],
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
