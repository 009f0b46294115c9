"""Capacity: the highest steady event rate the whole pipeline sustains on this machine, with every
stage and service on it, at the stages' default settings.

For each configuration (`--configs`, `WxR` = W features workers and the trainer on R Horovod
ranks; default `1x1,2x2`), fresh services on free loopback ports (Tansu, redis-server, MLflow:
soak_bench's start-up) and the stages as separate processes under the rotating log wrapper
(soak_bench's `_stage`): W x `freshrec features`, `freshrec train` (R > 1: `horovodrun -np R
--gloo`, flows/horovod.py), `freshrec publish` (its default interval; the trainer's export
wake-up publishes at once), `freshrec serve --alias latest`. Then steps of `freshrec ingest
--source synthetic --rate R`: climb `--rates` until a step fails, one bisection between the last
pass and the first failure, then one `--confirm-s` run at the highest rate that passed. Every
step continues the synthetic stream where the last one stopped (FRESHREC_INGEST_SYNTHETIC_START),
so event times only grow (a version's `max_event_time_ms` is a running max).

After a `--warmup-s` step at the lowest rate (not judged: the trainer traces its steps), every
`--every` s: produced (ingest's own count: `queued` in its progress line, once a second, and
`sent` in its summary once it stops; the broker's offsets restart at 0 when the broker keeper
restarts an in-memory Tansu that outgrew FRESHREC_KAFKA_MEMORY_MB), stored (the feature store's
`samples_out` counter, all workers), trained (the trainer's Prometheus
`freshrec_trainer_samples_total`, all ranks), the retention's trimmed samples (read or not), the
CPU seconds of each stage's and service's process tree (psutil), the load average.
features lag = produced - stored; trainer backlog = stored - trained.

A step passes when, over its last two thirds, the lag and the backlog grow by less than
`--max-growth` of the rate or two trainer windows over that time (least-squares slope; the
trained count moves a window at a time) and freshness p95 < 30 s with at most 5 % of the
sampled events uncovered (events of the judged part up to max(10 s, 45,000 events) before the
step ends: later ones wait for the next step's windows, exports being every 5th window).
Freshness as bench/freshness_bench.py measures it to the registry: a watcher
(`stages.publish.watch.watch_alias`, alias `latest`) notes when each version appears and the
newest event time it trained on; at every sample the newest event of each partition is read
back from Kafka (event time, message timestamp = ingest time; at once, as the broker keeper may
restart the broker empty) and `stages.publish.core.freshness` gives each its latency. After a
step, ingest stops and the pipeline drains (lag and backlog small and the step's newest sampled
event covered, at most `--drain-s`) before the next step starts.

Writes bench/out/capacity-<config><tag>.csv (one row per sample) and capacity<tag>.png; prints
one line per step and a Markdown table per configuration.

    .venv/bin/python bench/capacity_bench.py [--configs 1x1,2x2]
        [--rates 5000,10000,15000,20000,30000] [--step-s 60] [--confirm-s 300] [--tag=-NAME]
        [--env FRESHREC_TRAIN_CHECKPOINT_EVERY=150 ...]
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
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from soak_bench import _stage, _stop  # noqa: E402

from flows.horovod import horovod_argv  # noqa: E402
from flows.monitor import store_counters  # noqa: E402
from infra.services import free_port, start_service  # noqa: E402
from infra.services.logpipe import wrapped  # noqa: E402
from stages.common.events import decode_events  # noqa: E402
from stages.common.settings import CommonSettings, kafka_client_config, load_settings  # noqa: E402
from stages.publish.core.freshness import freshness  # noqa: E402
from stages.publish.watch import watch_alias  # noqa: E402
from stages.train.settings import TrainSettings  # noqa: E402

OUT = ROOT / "bench" / "out"
SERVICES = ("kafka", "redis", "mlflow")
FRESHNESS_P95_MAX_S = 30.0
QUEUED = re.compile(rb"queued ([\d,]+)")
SENT = re.compile(rb"ingest: read [\d,]+, sent ([\d,]+)")


@dataclass
class Step:
    """One ingest rate held for `seconds`; filled in as it runs."""

    rate: float
    seconds: float
    lag_slope: float = float("nan")  # events/s the features lag grew by (judged part)
    backlog_slope: float = float("nan")
    lag_end: float = float("nan")
    backlog_end: float = float("nan")
    p50_s: float | None = None
    p95_s: float | None = None
    uncovered: float = 0.0  # share of the sampled events no version covered
    achieved: float = float("nan")  # events/s into Kafka (broker offsets, judged part)
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core, per stage
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start, at end
    drained_s: float = float("nan")

    def tolerance(self, max_growth: float, window: int) -> float:
        """Growth (events/s) still called bounded: `max_growth` of the rate, or two windows
        over the judged part (the trainer counts a window once it is trained: its backlog is a
        saw-tooth of that height, which a short step's slope cannot tell from growth)."""
        return max(max_growth * self.rate, 2 * window / (self.seconds * 2 / 3))

    def passed(self, max_growth: float, window: int) -> bool:
        bounded = max(self.lag_slope, self.backlog_slope) < self.tolerance(max_growth, window)
        fresh = self.p95_s is not None and self.p95_s < FRESHNESS_P95_MAX_S
        return bool(bounded and fresh and self.uncovered <= 0.05)


class Pipeline:
    """Services and stages of one configuration, and the probes the steps read."""

    def __init__(self, workers: int, ranks: int, extra_env: dict[str, str], work: Path) -> None:
        self.work, self.ranks = work, ranks
        self.services = {n: start_service(n, free_port(), work / n) for n in SERVICES}
        kafka = self.services["kafka"].url.removeprefix("kafka://").removeprefix("tcp://")
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "TF_USE_LEGACY_KERAS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
            "FRESHREC_STATE_DIR": str(work / "state"),
            "FRESHREC_KAFKA_BOOTSTRAP": kafka,
            "FRESHREC_REDIS_URL": self.services["redis"].url,
            "FRESHREC_MLFLOW_TRACKING_URI": self.services["mlflow"].url,
            "FRESHREC_TRAIN_METRICS_PORT": str(self.metrics_port),
            "FRESHREC_INGEST_PROGRESS_INTERVAL_S": "1",
            **extra_env,
        }
        self.common = load_settings(
            CommonSettings, kafka_bootstrap=kafka, redis_url=self.services["redis"].url,
            mlflow_tracking_uri=self.services["mlflow"].url, state_dir=work / "state")
        self.logs = work / "state" / "logs"
        self.logs.mkdir(parents=True)
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {
            "features": [_stage(["features"], self.env, self.logs / f"features{i}.log")
                         for i in range(workers)],
            "train": [self._trainer()],
            "publish": [_stage(["publish"], self.env, self.logs / "publish.log")],
            "serve": [_stage(["serve", "--alias", "latest", "--host", "127.0.0.1", "--port",
                              str(free_port())], self.env, self.logs / "serve.log")],
        }
        self._cpu_procs: dict[int, tuple[str, psutil.Process]] = {}  # pid: (stage, process)
        self._cpu_last: dict[int, float] = {}  # pid: CPU seconds at its last reading
        self.synthetic_start = 0
        self.steps_run = 0  # each step's ingest logs to its own file
        self.sent_before = 0  # events the steps before this one sent

    def _trainer(self) -> subprocess.Popen[bytes]:
        if self.ranks == 1:
            return _stage(["train"], self.env, self.logs / "train.log")
        return subprocess.Popen(
            wrapped(horovod_argv(self.ranks, None, None), self.logs / "train.log"),
            env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout_s: float = 180) -> float:
        """Seconds until the trainer answers on its metrics port (TensorFlow loaded)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.trained() is not None:
                time.sleep(5)  # the features workers' group settles
                return time.monotonic() - t0
            time.sleep(1)
        raise RuntimeError(f"the trainer did not start; see {self.logs / 'train.log'}")

    # -- probes ---------------------------------------------------------------------------
    def trained(self) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=3) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        for family in text_string_to_metric_families(text):
            if family.name == "freshrec_trainer_samples":
                return float(family.samples[0].value)
        return None

    def ingest_count(self, final: bool) -> int:
        """Events the running ingest queued for Kafka (its progress line, once a second), or,
        `final`, those the stopped one sent (its summary; the last progress line without)."""
        path = self.logs / f"ingest-{self.steps_run}.log"
        tail = path.read_bytes()[-8192:] if path.exists() else b""
        found = (SENT.findall(tail) if final else []) or QUEUED.findall(tail)
        return int(found[-1].replace(b",", b"")) if found else 0

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds so far of each stage's and service's process tree; a
        process that exited keeps its last reading (the broker keeper restarts Tansu)."""
        roots = {**{n: [p.pid for p in ps] for n, ps in self.procs.items()},
                 **{n: [s.pid] for n, s in self.services.items()}, "bench": [os.getpid()]}
        out: dict[str, float] = {}
        for name, pids in roots.items():
            for pid in pids:
                try:
                    root = psutil.Process(pid)
                    tree = [root] if name == "bench" else [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for proc in tree:
                    proc = self._cpu_procs.setdefault(proc.pid, (name, proc))[1]
                    try:
                        times = proc.cpu_times()
                        self._cpu_last[proc.pid] = times.user + times.system
                    except psutil.NoSuchProcess:
                        continue
            out[name] = sum(v for pid, v in self._cpu_last.items()
                            if self._cpu_procs[pid][0] == name)
        return out

    def sample(self, rate: float, phase: str, t0: float) -> dict[str, float]:
        counters = store_counters(self.common)
        produced = self.sent_before + (self.ingest_count(final=False) if phase == "run" else 0)
        stored = counters.get("samples_out", 0)
        trained = self.trained()
        row = {"t": time.monotonic() - t0, "rate": rate, "run": float(phase == "run"),
               "produced": produced, "stored": stored,
               "trained": float("nan") if trained is None else trained,
               "trimmed": counters.get("retention_trimmed_samples", 0),
               "load1": os.getloadavg()[0]}
        row["lag"] = produced - stored
        row["backlog"] = stored - row["trained"]
        row.update({f"cpu_{k}": v for k, v in self.cpu_seconds().items()})
        return row

    # -- Kafka ----------------------------------------------------------------------------
    def _kafka(self):  # type: ignore[no-untyped-def]
        """A new consumer each time: after a broker restart the topic is a new one."""
        from confluent_kafka import Consumer

        return Consumer({**kafka_client_config(self.common), "group.id": "capacity-bench",
                         "enable.auto.commit": False})

    def newest_events(self) -> list[tuple[int, int]]:
        """(event time, Kafka timestamp) in ms of the newest event of each partition, read now
        (read at once: the broker keeper may restart the broker empty later)."""
        from confluent_kafka import KafkaException, TopicPartition

        consumer, topic, pairs = self._kafka(), self.common.topic_events, []
        try:
            meta = consumer.list_topics(topic, timeout=5)
            for p in meta.topics[topic].partitions if topic in meta.topics else {}:
                high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5,
                                                      cached=False)[1]
                if high <= 0:
                    continue
                consumer.assign([TopicPartition(topic, p, high - 1)])
                msg = consumer.poll(2)
                if msg is None or msg.error() is not None:
                    continue
                events = decode_events([msg.value()]).events
                if len(events):
                    pairs.append((int(events.event_time_ms[0]), msg.timestamp()[1]))
        except KafkaException as exc:  # the keeper restarted the broker under us: no sample
            print(f"  (no freshness sample: {exc})", flush=True)
        finally:
            consumer.close()
        return pairs

    # -- one step -------------------------------------------------------------------------
    def step(self, step: Step, args: argparse.Namespace, rows: list[dict[str, float]],
             t0: float) -> Step:
        self.steps_run += 1
        stop = threading.Event()
        sightings: list = []
        watcher = threading.Thread(target=lambda: sightings.extend(
            watch_alias(self.common, "latest", stop, args.watch_s)), daemon=True)
        watcher.start()
        env = {**self.env, "FRESHREC_INGEST_SYNTHETIC_START": str(self.synthetic_start)}
        step.load = (os.getloadavg()[0], 0.0)
        start = time.monotonic()
        ingest = _stage(["ingest", "--source", "synthetic", "--rate", f"{step.rate:g}"], env,
                        self.logs / f"ingest-{self.steps_run}.log")
        first = len(rows)
        # freshness of the events of the judged part, less a tail: the stream goes on past
        # them for the windows and the exports (every 5th window by default) that cover them
        tail = max(10.0, 45_000 / step.rate)
        pairs: list[tuple[int, int]] = []
        try:
            while time.monotonic() - start < step.seconds:
                rows.append(self.sample(step.rate, "run", t0))
                if step.seconds / 3 <= time.monotonic() - start <= step.seconds - tail:
                    pairs.extend(self.newest_events())
                time.sleep(max(0.0, args.every - (time.monotonic() - start) % args.every))
        finally:
            _stop(ingest, grace_s=20)
        ended = time.monotonic()
        elapsed = ended - start
        sent = self.ingest_count(final=True)
        self.sent_before += sent
        self.synthetic_start += max(sent, int(step.rate * elapsed * 1.5)) + 1
        run = rows[first:]
        step.cpu = {k[4:]: 100 * (run[-1][k] - run[0][k]) / (run[-1]["t"] - run[0]["t"])
                    for k in run[0] if k.startswith("cpu_")}
        step.load = (step.load[0], os.getloadavg()[0])
        judged = [r for r in run if r["t"] - run[0]["t"] >= step.seconds / 3]
        t = np.array([r["t"] for r in judged])
        step.achieved = float(np.polyfit(t, [r["produced"] for r in judged], 1)[0])
        for name in ("lag", "backlog"):
            y = np.array([r[name] for r in judged])
            ok = ~np.isnan(y)
            setattr(step, f"{name}_slope", float(np.polyfit(t[ok], y[ok], 1)[0])
                    if ok.sum() >= 3 else float("nan"))
            setattr(step, f"{name}_end", float(y[ok][-1]) if ok.any() else float("nan"))
        both = np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)
        event_ms, ingest_ms = both[:, 0], both[:, 1]
        newest = int(event_ms.max()) if len(event_ms) else 0
        drain = time.monotonic()
        while time.monotonic() - drain < args.drain_s:
            row = self.sample(step.rate, "drain", t0)
            rows.append(row)
            covered = any(s.max_event_time_ms >= newest for s in list(sightings)) or \
                self._covered_now(newest)
            if row["lag"] < step.rate and row["backlog"] < 2 * step.rate + 16384 and covered:
                break
            time.sleep(args.every)
        step.drained_s = time.monotonic() - ended  # the read-back above included
        stop.set()
        watcher.join(30)
        report = freshness(event_ms, ingest_ms, sightings)
        step.p50_s, step.p95_s = report.p50_s, report.p95_s
        step.uncovered = report.uncovered / max(1, len(event_ms))
        return step

    def _covered_now(self, newest: int) -> bool:
        """Whether the newest version already trained on event time `newest` (watch_alias
        hands its sightings over only when stopped)."""
        from stages.publish.registry import Registry

        try:
            registry = Registry(self.common)
            version = registry.alias_version("latest")
            info = registry.version_info(version) if version is not None else None
            return bool(info and info.max_event_time_ms and info.max_event_time_ms >= newest)
        except Exception:  # noqa: BLE001  # a probe missed is a probe missed: drain longer
            return False

    def close(self) -> None:
        for name in ("serve", "publish", "train", "features"):
            for proc in self.procs[name]:
                if name == "train" and self.ranks > 1:
                    _stop_group(proc)
                else:
                    _stop(proc)
        for service in self.services.values():
            service.stop()


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 90) -> None:
    """horovodrun and its ranks: SIGTERM to the group, as flows/horovod.py stops them."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _say(label: str, step: Step, args: argparse.Namespace) -> None:
    """One line per step (and the CSV so far, `rows` being the config's own)."""
    cpu = " ".join(f"{k}={v:.0f}%" for k, v in step.cpu.items())
    p50 = "-" if step.p50_s is None else f"{step.p50_s:.1f}"
    p95 = "-" if step.p95_s is None else f"{step.p95_s:.1f}"
    print(f"[{label}] rate {step.rate:,.0f} ({step.seconds:.0f} s, sent {step.achieved:,.0f}/s): "
          f"lag {step.lag_slope:+,.0f}/s (end {step.lag_end:,.0f}), backlog "
          f"{step.backlog_slope:+,.0f}/s (end {step.backlog_end:,.0f}), freshness p50 {p50} "
          f"p95 {p95} s, uncovered {step.uncovered:.0%}, drained in {step.drained_s:.0f} s, "
          f"load {step.load[0]:.1f}->{step.load[1]:.1f} | {cpu} -> "
          f"{'PASS' if step.passed(args.max_growth, args.window) else 'FAIL'}", flush=True)


def run_config(label: str, args: argparse.Namespace) -> tuple[list[Step], Step | None, list]:
    """The search and the confirmation of one configuration `WxR`."""
    workers, ranks = (int(x) for x in label.split("x"))
    work = Path(tempfile.mkdtemp(prefix=f"freshrec-capacity-{label}-"))
    print(f"[{label}] work dir {work}; load {os.getloadavg()}", flush=True)
    pipeline = Pipeline(workers, ranks, dict(args.env), work)
    rows: list[dict[str, float]] = []
    steps: list[Step] = []
    confirm: Step | None = None
    try:
        print(f"[{label}] trainer up after {pipeline.wait_ready():.0f} s", flush=True)
        t0 = time.monotonic()
        if args.warmup_s > 0:  # the trainer traces its step functions on its first windows
            _say(label + " warm-up", pipeline.step(Step(args.rates[0], args.warmup_s), args,
                                                  rows, t0), args)
        passed = failed = None
        for rate in args.rates:
            steps.append(pipeline.step(Step(rate, args.step_s), args, rows, t0))
            _say(label, steps[-1], args)
            _write_csv(label + args.tag, rows)
            if steps[-1].passed(args.max_growth, args.window):
                passed = rate
            else:
                failed = rate
                break
        if passed is not None and failed is not None:
            mid = round((passed + failed) / 2 / 500) * 500
            if passed < mid < failed:
                steps.append(pipeline.step(Step(mid, args.step_s), args, rows, t0))
                _say(label, steps[-1], args)
                if steps[-1].passed(args.max_growth, args.window):
                    passed = mid
        if passed is not None and args.confirm_s > 0:
            confirm = pipeline.step(Step(passed, args.confirm_s), args, rows, t0)
            _say(label + " confirm", confirm, args)
    finally:
        pipeline.close()
        _write_csv(label + args.tag, rows)
        log = pipeline.services["kafka"].log_path
        text = log.read_text(errors="replace") if log.exists() else ""
        restarts = text.count("restarted it empty")
        print(f"[{label}] broker restarts by the keeper (in-memory Tansu over its budget): "
              f"{restarts}", flush=True)
    return steps, confirm, rows


def _write_csv(label: str, rows: list[dict[str, float]]) -> None:
    """bench/out/capacity-<label>.csv, rewritten after every step (a crash keeps the steps)."""
    if not rows:
        return
    with (OUT / f"capacity-{label}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def table(label: str, steps: list[Step], confirm: Step | None, args: argparse.Namespace) -> str:
    names = list((confirm or steps[0]).cpu) if steps else []
    lines = [f"| {label} step | rate (sent/s) | s | features lag: growth/s, end | trainer "
             "backlog: growth/s, end | freshness p50 / p95 (uncovered) | load 1-min "
             "start->end | CPU % of one core: " + ", ".join(names) + " | verdict |",
             "|" + "---|" * 9]
    for kind, s in [*(("search", s) for s in steps), *([("confirm", confirm)] if confirm else [])]:
        fresh = "-" if s.p95_s is None else f"{s.p50_s:.1f} / {s.p95_s:.1f} s"
        lines.append(
            f"| {kind} | {s.rate:,.0f} ({s.achieved:,.0f}) | {s.seconds:.0f} | "
            f"{s.lag_slope:+,.0f}, {s.lag_end:,.0f} | {s.backlog_slope:+,.0f}, "
            f"{s.backlog_end:,.0f} | {fresh} ({s.uncovered:.0%}) | {s.load[0]:.1f} -> "
            f"{s.load[1]:.1f} | " + ", ".join(f"{s.cpu.get(n, 0):.0f}" for n in names)
            + f" | {'pass' if s.passed(args.max_growth, args.window) else 'FAIL'} |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict[str, float]]], tag: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(14, 4.5 * len(results)), squeeze=False)
    for ax, (label, rows) in zip(axes[:, 0], results.items()):
        t = [r["t"] / 60 for r in rows]
        ax.plot(t, [r["lag"] for r in rows], label="features lag (produced - stored)")
        ax.plot(t, [r["backlog"] for r in rows], label="trainer backlog (stored - trained)")
        ax.set_ylabel("events")
        rate_ax = ax.twinx()
        rate_ax.step(t, [r["rate"] if r["run"] else 0 for r in rows], color="grey",
                     linestyle=":", where="post", label="ingest rate (0: draining)")
        rate_ax.set_ylabel("events/s")
        ax.set_title(f"{label} (features workers x trainer ranks)")
        ax.set_xlabel("minutes")
        ax.legend(loc="upper left", fontsize=8)
        rate_ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / f"capacity{tag}.png", dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="1x1,2x2", help="WxR,...: workers x trainer ranks")
    parser.add_argument("--rates", default="5000,10000,15000,20000,30000",
                        type=lambda s: [float(x) for x in s.split(",")])
    parser.add_argument("--step-s", type=float, default=60.0, help="seconds per search step")
    parser.add_argument("--confirm-s", type=float, default=300.0, help="0: no confirmation")
    parser.add_argument("--warmup-s", type=float, default=40.0,
                        help="a first step at the lowest rate, not judged (0: none)")
    parser.add_argument("--drain-s", type=float, default=60.0, help="most seconds between steps")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--watch-s", type=float, default=0.5, help="registry poll of the watcher")
    parser.add_argument("--max-growth", type=float, default=0.03,
                        help="a lag growing by more than this share of the rate is unbounded")
    parser.add_argument("--tag", default="", help="suffix of the CSV and PNG names")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        type=lambda s: tuple(s.split("=", 1)), help="a setting for every stage")
    args = parser.parse_args()
    args.window = int(dict(args.env).get("FRESHREC_TRAIN_WINDOW_SAMPLES",
                                         TrainSettings.model_fields["window_samples"].default))
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}; uptime: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    results: dict[str, list[dict[str, float]]] = {}
    tables = []
    for label in args.configs.split(","):
        steps, confirm, rows = run_config(label, args)
        results[label] = rows
        tables.append(table(label, steps, confirm, args))
    plot(results, args.tag)
    print(f"\nuptime at the end: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}\n")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
