"""Training speed of the sharded dynamic embedding vs a static hashed embedding, and the drift
experiment (online vs frozen model). Writes bench/RESULTS-train.md and bench/out/drift_auc.png.

    .venv/bin/python bench/train_bench.py            # speed: -np 1 and -np 2 (horovodrun), drift
    .venv/bin/python bench/train_bench.py --speed    # speed only
    .venv/bin/python bench/train_bench.py --drift    # drift only

Speed: rows from the ingest stage's synthetic generator (`stages/ingest/core/synthetic.py`,
Criteo-like cardinalities, Zipf 1.1, new ids keep arriving), parsed and transformed like real
rows, mini-batches of 4,096 per rank. "dynamic" is `TFEngine.train` with admission
(admit_after=2), eviction (capacity 131,072 ids over all shards, evict_after_steps=10) and
sharding over the ranks; "static" is the same network and update rule with a tf_keras
`Embedding(131072, w)` over `id % 131072`, replicated and its gradient allreduced. Both run in
the same processes, alternating step by step (each dynamic step is one `train` call, so it also
pays the call's two bookkeeping collectives), so machine noise hits both alike; the ratio is
the median over step pairs. samples/s counts the rows of all ranks (median step time).
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

from stages.common.criteo import parse_valid_rows  # noqa: E402
from stages.common.model_export import ModelSpec  # noqa: E402
from stages.common.samples import SampleBatch  # noqa: E402
from stages.common.transform import to_samples  # noqa: E402
from stages.ingest.core.synthetic import SyntheticConfig, generate_rows  # noqa: E402
from stages.train.core.engine_protocol import EngineConfig  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS-train.md"
OUT = ROOT / "bench" / "out"
BATCH, STEPS, CAPACITY = 4096, 24, 131_072
SPECS = {
    "wide_deep": ModelSpec("wide_deep", 16, (128, 64)),
    "dcn": ModelSpec("dcn", 16, (128, 64), cross_layers=1),
}


def samples(config: SyntheticConfig, start: int, n: int) -> tuple[SampleBatch, np.ndarray]:
    chunk = generate_rows(config, start, n)
    return to_samples(parse_valid_rows(chunk.rows), chunk.event_time_ms), chunk.click_prob


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
            for var, grad, slots in zip(variables[1:], grads[1:], self.net.slots):
                self.opt.apply_dense(var, grad, slots, t, True)
            return loss

        self._step = step
        self.t = 0

    def train(self, batch: SampleBatch) -> None:
        self.t += 1
        idx = (batch.ids % np.uint64(self.vocab)).astype(np.int32)
        self._step(idx, batch.dense, batch.label.astype(np.float32), np.float32(self.t))


def speed_worker(json_out: Path) -> None:
    from stages.train.engine import TFEngine
    from stages.train.engine.dist import collectives

    comm = collectives()
    config = SyntheticConfig(seed=7)
    n_batches = 1 + STEPS
    data, _ = samples(config, comm.rank * n_batches * BATCH, n_batches * BATCH)
    batches = [data.take(slice(i * BATCH, (i + 1) * BATCH)) for i in range(n_batches)]
    results: dict[str, object] = {"size": comm.size}
    for model, spec in SPECS.items():
        dyn = TFEngine(EngineConfig(spec=spec, batch_size=BATCH, table_capacity=CAPACITY,
                                    admit_after=2, evict_after_steps=10), comm)
        static = StaticModel(spec, CAPACITY, comm)
        dyn.train(batches[0])  # warm-up: tracing
        static.train(batches[0])
        times: dict[str, list[float]] = {"dynamic": [], "static": []}
        evicted = 0
        for b in batches[1:]:
            for name in ("static", "dynamic"):
                comm.allgather(np.zeros(1, np.int64))  # start together
                start = time.perf_counter()
                if name == "dynamic":
                    evicted += dyn.train(b).evicted
                else:
                    static.train(b)
                took = np.asarray(comm.allgather(np.array([time.perf_counter() - start])))
                times[name].append(float(took.max()))
        rows = BATCH * comm.size
        rates = {k: [rows / t for t in v] for k, v in times.items()}
        pair = np.median(np.array(times["static"]) / np.array(times["dynamic"]))
        results[model] = {k: float(np.median(v)) for k, v in rates.items()}
        results[model]["ratio"] = float(pair)  # type: ignore[index]
        results[model]["table_size"] = dyn.table_size()  # type: ignore[index]
        results[model]["evicted"] = evicted  # type: ignore[index]
    if comm.rank == 0:
        json_out.write_text(json.dumps(results))


def run_speed() -> str:
    runner = Path(sys.executable).with_name("horovodrun")
    lines = []
    for np_ in (1, 2):
        out = OUT / f"speed_np{np_}.json"
        cmd = [str(runner), "-np", str(np_), "--gloo", "-H", f"localhost:{np_}", sys.executable,
               str(Path(__file__).resolve()), "--speed-worker", str(out)]
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        res = json.loads(out.read_text())
        for model in SPECS:
            m = res[model]
            lines.append(f"| -np {np_} | {model} | {m['dynamic']:,.0f} | {m['static']:,.0f} | "
                         f"{m['ratio']:.2f} | {m['table_size']:,} | {m['evicted']:,} |")
    print("\n".join(lines))
    return (
        f"\n## Training speed ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        f"Command: `.venv/bin/python bench/train_bench.py --speed` on {platform.node()}, "
        f"{os.cpu_count()} cores shared with other engineers' jobs (noisy: expect +-20%). "
        f"How: see the docstring of bench/train_bench.py (synthetic Criteo-like rows, batch "
        f"{BATCH} per rank, W&D and DCN-v2 with dim 16 and hidden (128, 64), Adagrad; "
        f"{STEPS} steps each, alternating static/dynamic step by step; samples/s from the "
        "median step time; ratio = median over step pairs of static time / dynamic time).\n\n"
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
    parser.add_argument("--speed-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_worker:
        speed_worker(args.speed_worker)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    both = not (args.speed or args.drift)
    text = (run_speed() if args.speed or both else "") + (run_drift() if args.drift or both else "")
    with RESULTS.open("a") as out:
        out.write(text)


if __name__ == "__main__":
    main()
