"""Does the trainer gain from every row? Held-out AUC after 'fewer' and 'more' rows, by batch size.

The replay (`freshrec train --replay`) trains a file in windows of `window_samples` rows (8,192
by default: two 4,096-line chunks), each window in mini-batches of `batch_size` from its first
row, so a window's last mini-batch holds the remainder. This script trains a `TFEngine` the
same way, in order and once, on a prefix of the training rows, and scores held-out rows of
/work/shared/data/criteo/criteo_sample_10k.tsv.gz (9,999 real rows in Kaggle order; the
shared criteo_tiny.tsv is rows 1-1,000 of it, so it is no second held-out set). Two splits:

- tail: held out rows 8,001-9,999; 'fewer' trains rows 1-6,000, 'more' rows 1-8,000;
- head: held out rows 1-2,000; 'fewer' trains rows 2,001-8,000, 'more' rows 2,001-9,999.

A good online learner scores 'more' >= 'fewer' on both. Every (split, length, batch, seed) is a
fresh engine; samples/s is the rows of a second pass over the same windows divided by its wall
time (training only; the first pass traced the steps and gave the AUC). `--batch default`
trains at the trainer's default (`TrainSettings().batch_size`, read like the trainer reads
it, FRESHREC_TRAIN_* included). The `--variant` options change one thing, to test a
hypothesis (see bench/RESULTS-train.md):

    .venv/bin/python bench/train_quality_split.py --batch 16,256 --seeds 0,1,2 [--write]
    ... --lengths 7936,7951,8000 --splits tail            # the last short mini-batch
    ... --lengths 7999 --variant window=6193  # the issue's shape: a second window of 1,806
        rows, last mini-batch 14 (windows of exactly W rows here; the replay itself rounds a
        window up to whole 4,096-line chunks, which is the same for the default 8,192)
    ... --variant row_acc0=1e-3 | dense_acc0=1e-2 | admit_after=1 | prior=0.22 | window=100000
        | lr=0.1 | nominal=0 (mean over the rows of a step, the old normalisation)
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from stages.common.layout import Transform, compile_layout  # noqa: E402
from stages.common.model_export import ModelSpec  # noqa: E402
from stages.common.rows import RowParser  # noqa: E402
from stages.common.samples import SampleBatch  # noqa: E402
from stages.common.schema import load_schema  # noqa: E402
from stages.common.transform import to_samples  # noqa: E402
from stages.train.core.engine_protocol import EngineConfig  # noqa: E402
from stages.train.core.metrics import auc  # noqa: E402
from stages.train.settings import TrainSettings  # noqa: E402

DATA = Path("/work/shared/data/criteo/criteo_sample_10k.tsv.gz")
RESULTS = Path(__file__).with_name("RESULTS-train.md")
SCHEMA = load_schema("criteo")  # the rows' schema
LAYOUT = compile_layout(SCHEMA, 16)  # embedding dimension 16


@dataclass(frozen=True)
class Split:
    """Rows are 1-based and inclusive; `train_from` .. `train_from + n - 1` for a length n."""

    name: str
    test: tuple[int, int]
    train_from: int
    lengths: tuple[int, ...]  # (fewer, more)


SPLITS = {
    "tail": Split("tail", (8001, 9999), 1, (6000, 8000)),
    "head": Split("head", (1, 2000), 2001, (6000, 7999)),
}


def load() -> SampleBatch:
    with gzip.open(DATA, "rb") as handle:
        lines = [line.rstrip(b"\n") for line in handle]
    parsed = RowParser.for_schema(SCHEMA).parse(lines)
    if parsed.bad:
        raise SystemExit(f"{len(parsed.bad)} invalid rows in {DATA}: {parsed.bad[0]}")
    return to_samples(Transform(SCHEMA, LAYOUT), parsed.raw,
                      np.arange(1, len(parsed) + 1, dtype=np.int64))


def rows(data: SampleBatch, first: int, last: int) -> SampleBatch:
    return data.take(slice(first - 1, last))


def apply_variant(variant: str, config: EngineConfig, window: int) -> tuple[EngineConfig, int]:
    """One hypothesis' change (module constants are read when the engine traces its steps)."""
    from stages.train.engine import engine as engine_mod
    from stages.train.engine import optim

    for item in filter(None, variant.split(",")):
        key, _, value = item.partition("=")
        if key == "row_acc0":
            optim.ROW_ACC0 = float(value)
        elif key == "dense_acc0":
            optim.DENSE_ACC0 = float(value)
        elif key == "admit_after":
            config = replace(config, admit_after=int(value))
        elif key == "prior":
            config = replace(config, prior_ctr=float(value))
        elif key == "lr":
            config = replace(config, learning_rate=float(value))
        elif key == "window":
            window = int(value)
        elif key == "nominal":
            engine_mod.NOMINAL_BATCH_LOSS = bool(int(value))
        else:
            raise SystemExit(f"unknown variant {key!r}")
    return config, window


def one_pass(
    data: SampleBatch, split: Split, n: int, batch: str, seed: int, model: str, variant: str
) -> dict[str, Any]:
    from stages.train.engine import TFEngine

    defaults = TrainSettings()
    cross = 1 if model == "dcn" else 0
    spec = ModelSpec.from_layout(LAYOUT, model, (128, 64), cross)  # type: ignore[arg-type]
    base = defaults.engine_config()
    config = replace(base, spec=spec, seed=seed, evict_after_steps=0)
    if batch != "default":
        config = replace(config, batch_size=int(batch))
    config, window = apply_variant(variant, config, defaults.window_samples)
    engine = TFEngine(config)
    train = rows(data, split.train_from, split.train_from + n - 1)
    test = rows(data, *split.test)
    windows = [train.take(slice(lo, lo + window)) for lo in range(0, len(train), window)]
    steps = sum(engine.train(w).steps for w in windows)
    score = auc(test.label, engine.predict(test))
    # Speed: a second pass over the same rows, now that the steps are traced (AUC is taken).
    start = time.perf_counter()
    for w in windows:
        engine.train(w)
    return {"auc": score, "sps": len(train) / (time.perf_counter() - start), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="16,64,256,1024,4096,default")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--splits", default="tail,head")
    parser.add_argument("--lengths", default="", help="override the lengths of every split")
    parser.add_argument("--model", default="wide_deep", choices=["wide_deep", "dcn"])
    parser.add_argument("--variant", default="")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS-train.md")
    args = parser.parse_args()
    data = load()
    seeds = [int(s) for s in args.seeds.split(",")]
    table = []
    for name in args.splits.split(","):
        split = SPLITS[name]
        if args.lengths:
            split = replace(split, lengths=tuple(int(v) for v in args.lengths.split(",")))
        for batch in args.batch.split(","):
            for n in split.lengths:
                res = [one_pass(data, split, n, batch, s, args.model, args.variant) for s in seeds]
                aucs = [r["auc"] for r in res]
                sps = float(np.median([r["sps"] for r in res]))
                line = (
                    f"| {split.name} | {n} | {batch} | {res[0]['steps']} | "
                    + " / ".join(f"{a:.4f}" for a in aucs)
                    + f" | {np.mean(aucs):.4f} | {sps:,.0f} |"
                )
                table.append(line)
                print(line, flush=True)
    if args.write:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with RESULTS.open("a") as out:
            out.write(
                f"\nCommand: `.venv/bin/python bench/train_quality_split.py "
                f"{' '.join(sys.argv[1:])}` ({stamp}, {platform.node()}, {os.cpu_count()} "
                f"cores, shared).\n\n"
                "| split | rows trained | batch | steps | held-out AUC seeds "
                f"{args.seeds.replace(',', ' / ')} | mean | samples/s |\n"
                "|---|---|---|---|---|---|---|\n" + "\n".join(table) + "\n"
            )


if __name__ == "__main__":
    main()
