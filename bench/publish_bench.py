"""Publish benchmark: artifact sizes of delta vs full registry versions over a stream of
trainer exports, plus the time to write, verify and apply them. Pure local (no MLflow): the
registry stores exactly these export directories (every version adds the MLflow
pyfunc files: MLmodel, the entry file, code/, about 113 KB a version; measured against a real
server by bench/plain_mlflow_bench.py).

Run: .venv/bin/python bench/publish_bench.py [--rows 200000] [--change 0.05] [--exports 12]
Writes bench/RESULTS-publish.md.

The end-to-end freshness number (event ingest -> servable version under the alias) needs the
whole pipeline: use `stages.publish.watch.watch_alias` to record when versions appear under the
alias and `stages.publish.core.freshness.freshness` to turn them into p50/p95 latencies.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stages.common.model_export import ModelSpec, apply_delta, read_export, write_export
from stages.publish.core.merge import FoldState, fold, registered, renumber
from stages.publish.synthetic import delta_export, full_export

RESULTS = Path(__file__).with_name("RESULTS-publish.md")


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def measure(args: argparse.Namespace, per_version: int) -> tuple[ModelSpec, list[str], str, float]:
    """One stream of exports; the size/timing table and a one-line summary."""
    rng = np.random.default_rng(0)
    spec = ModelSpec("wide_deep", args.dim, (256, 128))
    model = full_export(spec, rng, n_rows=args.rows)
    state, last_kind, pos = FoldState(), None, -1
    rows: list[tuple[int, str, int, int, float, float]] = []
    work = Path(tempfile.mkdtemp(prefix="publish-bench-"))
    started = time.perf_counter()
    try:
        served = None
        for seq in range(1, args.exports + 1):
            export = model if seq == 1 else delta_export(
                model, rng, change=args.change, evict=args.evict,
                add=int(args.rows * args.add), seq=seq)
            if seq > 1:
                model = apply_delta(model, export)
            state = fold(state, export, "bench")
            if state.folded < per_version and seq < args.exports:
                continue
            kind = "full" if last_kind is None else ("full" if state.needs_full or
                                                     pos + 1 >= args.full_every else "delta")
            pos = 0 if kind == "full" else pos + 1
            version = len(rows) + 1
            out = renumber(state.current if kind == "full" else state.delta,  # type: ignore[arg-type]
                           version, None if kind == "full" else version - 1)
            t0 = time.perf_counter()
            directory = write_export(out, work / f"v{version}")
            t_write = time.perf_counter() - t0
            t0 = time.perf_counter()
            loaded = read_export(directory)
            served = loaded if kind == "full" else apply_delta(served, loaded)  # type: ignore[arg-type]
            t_apply = time.perf_counter() - t0
            rows.append((version, kind, len(out.ids), _size(directory), t_write, t_apply))
            state, last_kind = registered(state), kind
            shutil.rmtree(directory)
        assert served is not None and np.array_equal(served.rows, model.rows[np.argsort(model.ids)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started

    full = [r[3] for r in rows if r[1] == "full"]
    delta = [r[3] for r in rows if r[1] == "delta"]
    lines = [
        "| version | kind | table rows in artifact | bytes | write s | verify+apply s |",
        "|---|---|---|---|---|---|",
        *(f"| {v} | {k} | {n} | {b:,} | {w:.3f} | {a:.3f} |" for v, k, n, b, w, a in rows),
    ]
    summary = (f"full versions: mean {np.mean(full):,.0f} bytes; delta versions: mean "
               f"{np.mean(delta):,.0f} bytes ({np.mean(delta) / np.mean(full):.1%} of full)"
               if delta else "no delta versions (raise --exports or --full-every)")
    return spec, lines, summary, elapsed


def measure_mlflow(args: argparse.Namespace, uri: str, deltas: int = 3) -> list[str]:
    """Seconds of each hop through a real MLflow server: trainer upload, one publisher cycle,
    serving's poll that downloads, verifies and applies the new version."""
    import uuid

    from mlflow import MlflowClient

    from stages.common.model_export import TAG_EXPORT_SEQ, TAG_ROLE, artifact_path
    from stages.common.settings import CommonSettings, load_settings
    from stages.publish.publisher import run_publisher
    from stages.publish.registry import Registry
    from stages.publish.serving import ModelFollower
    from stages.publish.settings import PublishSettings

    name = f"bench{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="publish-bench-"))
    common = load_settings(CommonSettings, mlflow_tracking_uri=uri, mlflow_experiment=name,
                           model_name=name, state_dir=work / "state")
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment(name), tags={TAG_ROLE: "trainer"}).info.run_id
    follower = ModelFollower(Registry(common), "production", work, 1.0)
    rng = np.random.default_rng(1)
    model = full_export(ModelSpec("wide_deep", args.dim, (256, 128)), rng, n_rows=args.rows)
    out = ["| version | kind | trainer upload s | publish cycle s | serving poll (download+verify+apply) s |",
           "|---|---|---|---|---|"]
    try:
        for seq in range(1, deltas + 2):
            export = model if seq == 1 else delta_export(
                model, rng, change=args.change, evict=args.evict, add=int(args.rows * args.add),
                seq=seq, meta={"progressive_auc": 0.7})
            if seq > 1:
                model = apply_delta(model, export)
            t0 = time.perf_counter()
            directory = write_export(export, work / f"t{seq}")
            client.log_artifacts(run_id, str(directory), artifact_path(seq))
            client.set_tag(run_id, TAG_EXPORT_SEQ, str(seq))
            t_up = time.perf_counter() - t0
            t0 = time.perf_counter()
            summary = run_publisher(common, load_settings(PublishSettings, full_every=100), once=True)
            t_pub = time.perf_counter() - t0
            t0 = time.perf_counter()
            if not follower.poll_once():
                raise RuntimeError(f"serving did not load v{summary.last_version}")
            t_poll = time.perf_counter() - t0
            out.append(f"| {summary.last_version} | {'full' if seq == 1 else 'delta'} | "
                       f"{t_up:.2f} | {t_pub:.2f} | {t_poll:.2f} |")
            print(out[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="embedding table rows")
    parser.add_argument("--dim", type=int, default=16, help="embedding dimension")
    parser.add_argument("--change", type=float, default=0.05, help="rows changed per export")
    parser.add_argument("--evict", type=float, default=0.005, help="rows evicted per export")
    parser.add_argument("--add", type=float, default=0.005, help="new rows per export (fraction)")
    parser.add_argument("--exports", type=int, default=12, help="trainer exports")
    parser.add_argument("--per-version", type=int, nargs="+", default=[1, 3],
                        help="trainer exports folded into one version (one table each)")
    parser.add_argument("--full-every", type=int, default=5, help="K: every K-th version full")
    parser.add_argument("--mlflow", help="also time the hops through this MLflow server URI")
    args = parser.parse_args()

    tables = []
    for per_version in args.per_version:
        spec, lines, summary, elapsed = measure(args, per_version)
        print(f"-- {per_version} trainer export(s) per version")
        print("\n".join(lines))
        print(summary)
        tables.append(f"""### {per_version} trainer export(s) per registry version ({elapsed:.1f} s wall)

{chr(10).join(lines)}

**{summary}**
""")
    hops = measure_mlflow(args, args.mlflow) if args.mlflow else []
    cmd = " ".join(["bench/publish_bench.py", *sys.argv[1:]])
    section = f"""# Publish benchmark results

## Delta vs full artifact sizes

- Command: `.venv/bin/python {cmd}`
- Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores shared with other
  engineers' jobs: timings are noisy, sizes are exact), Python {platform.python_version()}
- Data: synthetic trainer exports (`stages/publish/synthetic.py`, seed 0): Wide&Deep,
  embedding dim {args.dim} (row width {spec.row_width} float32), MLP 256-128;
  first export full with {args.rows:,} rows, then {args.exports - 1} deltas each changing
  {args.change:.1%} of the rows, evicting {args.evict:.1%} and adding {args.add:.1%} new ids;
  every {args.full_every}th registry version full; the deltas of the trainer exports folded
  into one version are merged (the publisher's fold/merge code).
- Bytes: the export directory a version holds in the registry (manifest + .npy files); every
  version also carries the MLflow pyfunc files (about 113 KB, see "Every version loads with plain
  MLflow" below). Dense weights are in every version.
- write s: `write_export` (with sha256); verify+apply s: `read_export` (every sha256 checked)
  plus `apply_delta` onto the served model, as serving does.

{chr(10).join(tables)}
## Hops through a real MLflow server

{chr(10).join(hops) if hops else "Not run (pass --mlflow http://127.0.0.1:PORT)."}

MLflow: a local `mlflow server` (SQLite backend, served artifacts, 1 worker) on the same
shared 2-core machine, so these timings include its CPU contention (noisy). Table size as above
({args.rows:,} rows), 5% of the rows changed per delta. Each publish cycle restarts the publisher (`run_publisher(once=True)`), so it includes
rebuilding its model from the registry (downloading the chain); a long-running publisher skips
that. Every version also logs the MLflow pyfunc model.

## Freshness (event ingest -> servable version under the alias)

Not measured here: it needs the whole pipeline (the lead's end-to-end benchmark). The measuring
functions are `stages.publish.watch.watch_alias` (first sighting of each version under the alias)
and `stages.publish.core.freshness.freshness` (per-event latency = first sighting of a version
whose `max_event_time_ms` covers the event, minus the event's ingest time; p50/p95).
"""
    # keep the section bench/plain_mlflow_bench.py writes
    kept = RESULTS.read_text() if RESULTS.exists() else ""
    marker = "## Every version loads with plain MLflow"
    if marker in kept:
        section = section.rstrip("\n") + "\n\n" + marker + kept.partition(marker)[2]
    RESULTS.write_text(section)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
