"""Training speed of the sharded dynamic embedding vs a static hashed embedding, and the drift
experiment (online vs frozen model). Writes bench/RESULTS-train.md and bench/out/drift_auc.png.

    .venv/bin/python bench/train_bench.py            # speed: -np 1 and -np 2 (horovodrun), drift
    .venv/bin/python bench/train_bench.py --speed    # speed only
    .venv/bin/python bench/train_bench.py --drift    # drift only
    ... --write                                      # also append the results to RESULTS-train.md
    ... --speed --baseline DIR [--ranks 1]           # also the speed of the checkout in DIR
                                                     # (e.g. `git worktree add DIR <commit>`),
                                                     # alternating with this one: before/after

Speed: rows from the ingest stage's synthetic generator (`stages/ingest/core/synthetic.py`,
Criteo-like cardinalities, Zipf 1.1, new ids keep arriving), parsed and transformed like real
rows, mini-batches of 4,096 per rank. "dynamic" is `TFEngine.train` with admission
(admit_after=2), eviction (capacity 131,072 ids over all shards, evict_after_steps=10) and
sharding over the ranks; "static" is the same network and update rule with a tf_keras
`Embedding(131072, w)` over `id % 131072`, replicated and its gradient allreduced. The unit of
work is a window of --window-steps mini-batches (default 4; the trainer's default window of
8,192 rows at batch 256 is 32 steps): one `TFEngine.train` call for "dynamic", so it pays
the call's bookkeeping collectives once per window, as the trainer does. Both run in the same
processes, alternating window by window, so machine noise hits both alike; the ratio is the
median over window pairs. samples/s counts the rows of all ranks (median window time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from stages.common.layout import Transform, compile_layout  # noqa: E402
from stages.common.model_export import ModelSpec  # noqa: E402
from stages.common.rows import RowParser  # noqa: E402
from stages.common.samples import SampleBatch  # noqa: E402
from stages.common.schema import load_schema  # noqa: E402
from stages.common.transform import to_samples  # noqa: E402
from stages.ingest.core.synthetic import SyntheticConfig, generate_rows  # noqa: E402
from stages.train.core.engine_protocol import EngineConfig  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS-train.md"
OUT = ROOT / "bench" / "out"
BATCH, CAPACITY = 4096, 131_072
WINDOW_STEPS = 4  # mini-batches per timed window (one train call), --window-steps
STEPS = 32  # timed mini-batches per model, in max(8, STEPS // window_steps) windows
SCHEMA = load_schema("criteo")  # the generator writes Criteo rows
LAYOUT = compile_layout(SCHEMA, 16)
SPECS = {  # what the trainer builds from FRESHREC_SCHEMA=criteo (`TrainSettings.model_spec`)
    "wide_deep": ModelSpec.from_layout(LAYOUT, "wide_deep", (128, 64)),
    "dcn": ModelSpec.from_layout(LAYOUT, "dcn", (128, 64), 1),
}


def samples(config: SyntheticConfig, start: int, n: int) -> tuple[SampleBatch, np.ndarray]:
    chunk = generate_rows(config, start, n)
    raw = RowParser.for_schema(SCHEMA).parse(chunk.rows).raw  # all valid
    return to_samples(Transform(SCHEMA, LAYOUT), raw, chunk.event_time_ms), chunk.click_prob


class StaticModel:
    """The same network and optimizer on a static tf_keras Embedding over `id % vocab`."""

    def __init__(self, spec: ModelSpec, vocab: int, comm: object) -> None:
        import tensorflow as tf
        import tf_keras

        from stages.train.engine.optim import Optimizer
        from stages.train.engine.step import Network

        self.vocab = vocab
        self.opt = Optimizer("adagrad", 0.05, 0.0)
        self.net = Network(spec, self.opt, 0, comm.allreduce_sum)  # type: ignore[attr-defined]
        init = tf_keras.initializers.RandomUniform(-0.05, 0.05)
        self.emb = tf_keras.layers.Embedding(vocab, spec.row_width, embeddings_initializer=init)
        self.emb.build((None, spec.n_fields))
        self.slots = [tf.Variable(s) for s in self.opt.slot_init((vocab, spec.row_width))]
        self.size = comm.size  # type: ignore[attr-defined]
        self.comm = comm
        from stages.train.engine.models import logits

        @tf.function(reduce_retracing=True)
        def step(idx: tf.Tensor, x: tf.Tensor, y: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                z = logits(spec, self.net.dense, self.emb(idx), x)
                loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z))
                loss = loss / (tf.cast(tf.shape(y)[0], tf.float32) * self.size)
            variables = [self.emb.embeddings, *self.net.dense.values()]
            grads = comm.allreduce_sum(tape.gradient(loss, variables))  # type: ignore[attr-defined]
            g = grads[0]
            uniq, pos = tf.unique(g.indices)
            summed = tf.math.unsorted_segment_sum(g.values, pos, tf.shape(uniq)[0])
            self.opt.apply_rows(self.emb.embeddings, tf.cast(uniq, tf.int64), summed, self.slots, t)
            for var, grad, slots, scale in zip(
                variables[1:], grads[1:], self.net.slots, self.net.lr_scales
            ):
                self.opt.apply_dense(var, grad, slots, t, True, scale)
            return loss

        self._step = step
        self.t = 0

    def train(self, batch: SampleBatch) -> None:
        self.t += 1
        idx = (batch.ids % np.uint64(self.vocab)).astype(np.int32)
        self._step(idx, batch.dense, batch.label.astype(np.float32), np.float32(self.t))

    def train_window(self, window: SampleBatch, batch_size: int) -> None:
        for start in range(0, len(window), batch_size):
            self.train(window.take(slice(start, start + batch_size)))


def speed_worker(json_out: Path, window_steps: int) -> None:
    from stages.train.engine import TFEngine
    from stages.train.engine.dist import collectives

    comm = collectives()
    config = SyntheticConfig(seed=7)
    window = BATCH * window_steps
    n_windows = 1 + max(8, STEPS // window_steps)
    data, _ = samples(config, comm.rank * n_windows * window, n_windows * window)
    windows = [data.take(slice(i * window, (i + 1) * window)) for i in range(n_windows)]
    results: dict[str, object] = {"size": comm.size}
    for model, spec in SPECS.items():
        dyn = TFEngine(EngineConfig(spec=spec, batch_size=BATCH, table_capacity=CAPACITY,
                                    admit_after=2, evict_after_steps=10), comm)
        static = StaticModel(spec, CAPACITY, comm)
        dyn.train(windows[0])  # warm-up: tracing
        static.train_window(windows[0], BATCH)
        times: dict[str, list[float]] = {"dynamic": [], "static": []}
        evicted = 0
        for b in windows[1:]:
            for name in ("static", "dynamic"):
                comm.allgather(np.zeros(1, np.int64))  # start together
                start = time.perf_counter()
                if name == "dynamic":
                    evicted += dyn.train(b).evicted
                else:
                    static.train_window(b, BATCH)
                took = np.asarray(comm.allgather(np.array([time.perf_counter() - start])))
                times[name].append(float(took.max()))
        rows = window * comm.size
        rates = {k: [rows / t for t in v] for k, v in times.items()}
        pair = np.median(np.array(times["static"]) / np.array(times["dynamic"]))
        results[model] = {k: float(np.median(v)) for k, v in rates.items()}
        results[model]["ratio"] = float(pair)  # type: ignore[index]
        results[model]["table_size"] = dyn.table_size()  # type: ignore[index]
        results[model]["evicted"] = evicted  # type: ignore[index]
    if comm.rank == 0:
        json_out.write_text(json.dumps(results))


def _speed_run(root: Path, np_: int, window_steps: int, tag: str) -> dict[str, dict[str, float]]:
    """One speed worker run of the checkout at `root` (its own bench script and code)."""
    runner = Path(sys.executable).with_name("horovodrun")
    out = OUT / f"speed_np{np_}{tag}.json"
    cmd = [str(runner), "-np", str(np_), "--gloo", "-H", f"localhost:{np_}", sys.executable,
           str(root / "bench" / "train_bench.py"), "--speed-worker", str(out),
           "--window-steps", str(window_steps)]
    subprocess.run(cmd, check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    result: dict[str, dict[str, float]] = json.loads(out.read_text())
    return result


def run_speed(window_steps: int, ranks: tuple[int, ...], baseline: Path | None) -> str:
    lines = []
    for np_ in ranks:
        runs = {"": _speed_run(ROOT, np_, window_steps, "")}
        if baseline is not None:  # before/after side by side, after first and last
            runs["baseline"] = _speed_run(baseline.resolve(), np_, window_steps, "_baseline")
            again = _speed_run(ROOT, np_, window_steps, "_again")
            runs[""] = {m: {k: (v + again[m][k]) / 2 for k, v in runs[""][m].items()}
                        for m in SPECS}
        for model in SPECS:
            for tag, res in runs.items():
                m = res[model]
                lines.append(
                    f"| -np {np_} | {model}{' (baseline)' if tag else ''} | "
                    f"{m['dynamic']:,.0f} | {m['static']:,.0f} | {m['ratio']:.2f} | "
                    f"{m['table_size']:,.0f} | {m['evicted']:,.0f} |")
            if baseline is not None:
                after, before = runs[""][model]["dynamic"], runs["baseline"][model]["dynamic"]
                lines.append(f"| -np {np_} | {model}: after / before | {after / before:.3f} "
                             "| | | | |")
    print("\n".join(lines))
    return (
        f"\n## Training speed ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        f"Command: `.venv/bin/python bench/train_bench.py --speed --window-steps {window_steps} "
        f"--ranks {','.join(map(str, ranks))}"
        f"{f' --baseline {baseline}' if baseline else ''}` "
        f"on {platform.node()}, {os.cpu_count()} cores, load average at the end "
        f"{os.getloadavg()[0]:.1f} (other jobs on the machine make the ratios noisy). "
        f"How: see the docstring of bench/train_bench.py (synthetic Criteo-like rows, batch "
        f"{BATCH} per rank, W&D and DCN-v2 with dim 16 and hidden (128, 64), Adagrad; "
        f"{max(8, STEPS // window_steps)} windows of {window_steps} steps each, alternating "
        "static/dynamic window by window; samples/s from the median window time; ratio = "
        "median over window pairs of static time / dynamic time"
        + ("; with a baseline: this checkout, the baseline, this checkout again, in a row, "
           "this checkout's figures the mean of its two runs" if baseline else "")
        + ").\n\n"
        "| ranks | model | dynamic samples/s | static samples/s | ratio | table size | evicted |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )


def run_drift() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stages.train.core.metrics import auc
    from stages.train.engine import TFEngine

    window, n_windows, frozen_after = 5000, 40, 4
    config = SyntheticConfig(seed=11, drift_period_s=60.0, events_per_s=1000.0)
    cfg = EngineConfig(spec=SPECS["wide_deep"], batch_size=256, learning_rate=0.05,
                       table_capacity=200_000, admit_after=2, evict_after_steps=2000)
    online, frozen = TFEngine(cfg), TFEngine(cfg)
    curves: dict[str, list[float]] = {"online": [], "frozen": [], "oracle": []}
    for w in range(n_windows):
        batch, prob = samples(config, w * window, window)
        curves["online"].append(auc(batch.label, online.predict(batch)))
        curves["frozen"].append(auc(batch.label, frozen.predict(batch)))
        curves["oracle"].append(auc(batch.label, prob))
        online.train(batch)
        if w < frozen_after:
            frozen.train(batch)
    OUT.mkdir(parents=True, exist_ok=True)
    minutes = [(w + 1) * window / config.events_per_s / 60 for w in range(n_windows)]
    plt.figure(figsize=(8, 4.5))
    for name, style in (("online", "-"), ("frozen", "--"), ("oracle", ":")):
        plt.plot(minutes, curves[name], style, label=name)
    plt.axvline(frozen_after * window / config.events_per_s / 60, color="grey", lw=0.5)
    plt.xlabel("simulated minutes (drift period 1 min)")
    plt.ylabel("progressive AUC per window")
    plt.title("Online vs frozen-after-4-windows W&D on a drifting synthetic stream")
    plt.legend()
    plt.tight_layout()
    plt.savefig(OUT / "drift_auc.png", dpi=100)
    late = slice(frozen_after + 1, None)
    summary = {k: float(np.nanmean(v[late])) for k, v in curves.items()}
    print("drift mean AUC after freezing:", summary)
    return (
        f"\n## Drift experiment ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        "Command: `.venv/bin/python bench/train_bench.py --drift`. Synthetic generator seed 11, "
        f"drift_period_s=60 at 1,000 events/s, {n_windows} windows of {window:,} rows, each scored "
        f"before training; W&D (dim 16, hidden (128, 64)), batch 256, Adagrad 0.05. 'frozen' "
        f"trains on the first {frozen_after} windows only; 'oracle' scores with the generator's "
        f"true click probability. Mean AUC over windows {frozen_after + 2}-{n_windows}: online "
        f"{summary['online']:.4f}, frozen {summary['frozen']:.4f}, oracle {summary['oracle']:.4f}. "
        "Plot: bench/out/drift_auc.png. Per-window AUC (online/frozen): "
        + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(curves["online"], curves["frozen"]))
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--drift", action="store_true")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS-train.md")
    parser.add_argument("--window-steps", type=int, default=WINDOW_STEPS,
                        help="mini-batches of 4,096 rows per rank in one timed train call")
    parser.add_argument("--ranks", default="1,2", help="horovodrun -np values, e.g. 1 or 1,2")
    parser.add_argument("--baseline", type=Path, help="another checkout to time alternately "
                        "(before/after), e.g. a git worktree of the previous commit")
    parser.add_argument("--speed-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_worker:
        speed_worker(args.speed_worker, args.window_steps)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    both = not (args.speed or args.drift)
    ranks = tuple(int(r) for r in args.ranks.split(","))
    speed = run_speed(args.window_steps, ranks, args.baseline) if args.speed or both else ""
    text = speed + (
        run_drift() if args.drift or both else ""
    )
    if args.write:
        with RESULTS.open("a") as out:
            out.write(text)


if __name__ == "__main__":
    main()
