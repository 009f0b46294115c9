"""Quality of the online trainer on real Criteo rows: one pass, in order, then a held-out AUC.

Rows 1-8,000 of /work/shared/data/criteo/criteo_sample_10k.tsv.gz are read in order, in windows
of --window rows; each window is first scored by the current model (progressive validation),
then trained on, once (no second pass over any row). Then rows 8,001-9,999 are scored and their
AUC is the headline number (goal >= 0.73; a tuned offline hashed logistic regression reaches
0.734). Appends its results to bench/RESULTS-train.md with --write.

    .venv/bin/python bench/train_quality.py [--model wide_deep|dcn] [--write]
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import time
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
from stages.train.core.metrics import auc, logloss  # noqa: E402

DATA = Path("/work/shared/data/criteo/criteo_sample_10k.tsv.gz")
RESULTS = Path(__file__).with_name("RESULTS-train.md")
N_TRAIN = 8000

SCHEMA = load_schema("criteo")  # the rows' schema
LAYOUT = compile_layout(SCHEMA, 16)  # embedding dimension 16

# The tuned defaults (the loop owns EngineConfig; these are reported to the lead).
DEFAULTS = {
    "wide_deep": dict(hidden_units=(128, 64), cross_layers=0),
    "dcn": dict(hidden_units=(128, 64), cross_layers=1),
}


def load() -> SampleBatch:
    with gzip.open(DATA, "rb") as handle:
        lines = [line.rstrip(b"\n") for line in handle]
    parsed = RowParser.for_schema(SCHEMA).parse(lines)
    if parsed.bad:
        line, reason = parsed.bad[0]
        raise SystemExit(f"{len(parsed.bad)} invalid rows in {DATA}, first at line {line + 1}: "
                         f"{reason}")
    return to_samples(Transform(SCHEMA, LAYOUT), parsed.raw,
                      np.arange(len(parsed), dtype=np.int64))


def run(model: str, args: argparse.Namespace) -> dict[str, Any]:
    from stages.train.engine import TFEngine

    spec = ModelSpec.from_layout(LAYOUT, model, **DEFAULTS[model])  # type: ignore[arg-type]
    config = EngineConfig(
        spec=spec,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        l2=args.l2,
        admit_after=args.admit_after,
        seed=args.seed,
    )
    engine = TFEngine(config)
    data = load()
    train, test = data.take(slice(0, N_TRAIN)), data.take(slice(N_TRAIN, None))
    start = time.perf_counter()
    windows = []
    preds_all = []
    for lo in range(0, N_TRAIN, args.window):
        window = train.take(slice(lo, lo + args.window))
        p = engine.predict(window)
        preds_all.append(p)
        result = engine.train(window)
        windows.append(
            (lo + 1, lo + len(window), auc(window.label, p), logloss(window.label, p),
             result.table_size)
        )
    seconds = time.perf_counter() - start
    p_test = engine.predict(test)
    prog = np.concatenate(preds_all)
    return {
        "model": model, "config": config, "windows": windows, "seconds": seconds,
        "test_auc": auc(test.label, p_test), "test_logloss": logloss(test.label, p_test),
        "prog_auc": auc(train.label[args.window:], prog[args.window:]),
    }


def report(res: dict[str, Any]) -> str:
    """Markdown lines for one model's run."""
    windows = "; ".join(
        f"{a}-{b}: {u:.3f}/{ll:.3f}/{t}" for a, b, u, ll, t in res["windows"]
    )
    return "\n".join([
        f"- {res['model']}: held-out AUC rows 8,001-9,999 = **{res['test_auc']:.4f}** "
        f"(logloss {res['test_logloss']:.4f}); progressive AUC over the rows after the first "
        f"window = {res['prog_auc']:.4f}; {res['seconds']:.1f} s for the pass",
        f"  config: {res['config']}",
        f"  per window (rows, progressive AUC / logloss / table size): {windows}",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["wide_deep", "dcn", "both"], default="both")
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--optimizer", default="adagrad")
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--admit-after", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS-train.md")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is missing: the quality benchmark needs the shared Criteo sample")
    models = ["wide_deep", "dcn"] if args.model == "both" else [args.model]
    text = []
    for model in models:
        res = run(model, args)
        text.append(report(res))
        print(text[-1], flush=True)
    if args.write:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with RESULTS.open("a") as out:
            out.write(
                f"\n## Quality on real Criteo rows ({stamp})\n\n"
                f"Command: `.venv/bin/python bench/train_quality.py {' '.join(sys.argv[1:])}` on "
                f"{platform.node()} ({os.cpu_count()} cores, shared).\n"
                f"Data: criteo_sample_10k rows 1-8,000, one pass in order, windows of "
                f"{args.window}, each scored before training (progressive), then rows "
                "8,001-9,999 held out.\n\n" + "\n".join(text) + "\n"
            )


if __name__ == "__main__":
    main()
