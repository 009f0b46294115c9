"""What it costs that every registry version, delta ones too, is a plain MLflow pyfunc model.

Against a real MLflow server (started here on a free port unless --mlflow is given): a trainer
run uploads one full synthetic export (--rows rows) and --deltas deltas, the real `Publisher`
registers each as its own version (v1 full, v2.. deltas; the last at chain position
--deltas). Measured per delta version:

- bytes: the version's artifacts in MLflow (listed recursively) now, against its export
  directory alone, which is exactly what a delta version held before (`export/` only);
- register s: `Registry.register` now (chain computed from the registry, pyfunc model saved,
  uploaded, version created), against the old path on the same export (upload `export/`,
  create the version), run right after it against the same server;
- load s, last version: `mlflow.pyfunc.load_model("models:/<name>/<last>")` (downloads the
  version, then its chain's exports, verifies and applies them) against freshrec's own cold
  path `Registry.materialize` (serving's first poll); predictions compared on 1,000 rows.

Run: .venv/bin/python bench/plain_mlflow_bench.py [--rows 200000] [--deltas 4]
Writes the section "Every version loads with plain MLflow" of bench/RESULTS-publish.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from stages.common.model_export import TAG_EXPORT_SEQ, TAG_ROLE, apply_delta, artifact_path
from stages.common.model_export import ModelSpec, write_export
from stages.common.settings import CommonSettings, load_settings
from stages.publish.core.requests import text_to_inputs
from stages.publish.loaded import LoadedModel
from stages.publish.publisher import Publisher, PublishSummary
from stages.publish.registry import Registry
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import criteo_rows, delta_export, full_export

RESULTS = Path(__file__).with_name("RESULTS-publish.md")
SECTION = "## Every version loads with plain MLflow"


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _artifact_bytes(client: Any, run_id: str, path: str) -> int:
    total = 0
    for item in client.list_artifacts(run_id, path):
        total += _artifact_bytes(client, run_id, item.path) if item.is_dir else (item.file_size or 0)
    return total


def measure(args: argparse.Namespace, uri: str) -> list[str]:
    import mlflow.pyfunc
    from mlflow import MlflowClient

    os.environ["MLFLOW_TRACKING_URI"] = uri
    name = f"bench{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="plain-bench-"))
    common = load_settings(CommonSettings, mlflow_tracking_uri=uri, mlflow_experiment=name,
                           model_name=name, state_dir=work / "state")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    trainer = client.create_run(client.create_experiment(name), tags={TAG_ROLE: "trainer"})
    run_id = trainer.info.run_id
    old_run = client.create_run(client.get_experiment_by_name(name).experiment_id).info.run_id
    client.create_registered_model(f"{name}-old")
    registry = Registry(common)
    publisher = Publisher(registry, PublishSettings(full_every=100), work)
    publisher.restore()
    timings: dict[int, tuple[float, float, int]] = {}
    register = registry.register

    def timed_register(export_dir: Path, tags: dict[str, str]) -> int:
        t0 = time.perf_counter()
        version = register(export_dir, tags)
        t_new = time.perf_counter() - t0
        t0 = time.perf_counter()  # what a delta version was before: `export/` only
        rel = f"old/{int(tags['freshrec.publish_seq']):08d}"
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            shutil.copytree(export_dir, Path(tmp) / "version" / "export")
            client.log_artifacts(old_run, str(Path(tmp) / "version"), rel)
        client.create_model_version(f"{name}-old", f"runs:/{old_run}/{rel}", run_id=old_run)
        timings[version] = (t_new, time.perf_counter() - t0, _size(export_dir))
        return version

    registry.register = timed_register  # type: ignore[method-assign]
    rng = np.random.default_rng(3)
    model = full_export(ModelSpec("wide_deep", args.dim, (256, 128)), rng, n_rows=args.rows)
    summary = PublishSummary()
    for seq in range(1, args.deltas + 2):
        export = model if seq == 1 else delta_export(
            model, rng, change=args.change, evict=0.005, add=int(args.rows * 0.005), seq=seq)
        if seq > 1:
            model = apply_delta(model, export)
        directory = write_export(export, work / f"trainer-{seq}")
        client.log_artifacts(run_id, str(directory), artifact_path(seq))
        client.set_tag(run_id, TAG_EXPORT_SEQ, str(seq))
        publisher.cycle(summary)
    registry.close()

    out = ["| version | kind | chain pos | bytes before (export only) | bytes now | added | "
           "register s before | register s now |", "|---|---|---|---|---|---|---|---|"]
    for version, (t_new, t_old, before) in sorted(timings.items()):
        info = registry.version_info(version)
        mv = client.get_model_version(name, str(version))
        vrun, _, rel = mv.source.removeprefix("runs:/").partition("/")
        now = _artifact_bytes(client, vrun, rel)
        out.append(f"| {version} | {info.kind} | {info.chain_pos} | {before:,} | {now:,} | "
                   f"{now - before:,} | {t_old:.2f} | {t_new:.2f} |")
        print(out[-1], flush=True)
    last = max(timings)
    rows = "\n".join(criteo_rows(1000, np.random.default_rng(4))).encode()
    t0 = time.perf_counter()
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{last}")
    t_pyfunc = time.perf_counter() - t0
    t0 = time.perf_counter()
    materialized = registry.materialize(last, work)
    t_freshrec = time.perf_counter() - t0
    import pandas as pd

    got = pyfunc.predict(pd.DataFrame({"row": rows.decode().split("\n")}))
    want = LoadedModel(materialized, str(last), "full", 0).predict(text_to_inputs(rows, 10_000))
    diff = float(np.max(np.abs(got - want)))
    out += ["", f"Loading v{last} (delta at chain position {registry.version_info(last).chain_pos}"
            f", {len(materialized.ids):,} table rows): `mlflow.pyfunc.load_model` "
            f"**{t_pyfunc:.2f} s**; freshrec `Registry.materialize` (serving's cold path) "
            f"**{t_freshrec:.2f} s**; max |prediction difference| on 1,000 rows {diff:.1e}."]
    print(out[-1])
    shutil.rmtree(work, ignore_errors=True)
    return out


def write_section(args: argparse.Namespace, lines: list[str]) -> None:
    cmd = " ".join(["bench/plain_mlflow_bench.py", *sys.argv[1:]])
    body = f"""{SECTION}

- Command: `.venv/bin/python {cmd}` (issue 11, item 3)
- Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores shared with other
  engineers' jobs: seconds are noisy, bytes are exact), Python {platform.python_version()}
- MLflow: a local `mlflow server` (SQLite, served artifacts) on the same machine.
- Data: synthetic exports, Wide&Deep dim {args.dim}, MLP 256-128, {args.rows:,} table rows;
  each delta changes {args.change:.0%} of the rows; one version per export (v1 full).
- bytes before: the delta's export directory, all a delta version held before; bytes now: the
  version's artifacts listed in MLflow (export + MLmodel, python_model.py, code/ with the
  `stages` modules the model imports, requirements/env files, the input examples, chain.json).
- register s before: upload of `export/` plus `create_model_version` (the old delta path),
  measured on the same export right after the new path; register s now: `Registry.register`.
  (v1, full, was a pyfunc model before too: its "before" columns are the export alone.)

{chr(10).join(lines)}

The added bytes are fixed per version (they do not grow with the table); almost all of it is
the copied `stages` code the model imports. `mlflow.pyfunc.load_model` downloads the whole
version directory and then the exports of its chain one by one; serving downloads exports only.
"""
    text = RESULTS.read_text() if RESULTS.exists() else "# Publish benchmark results\n"
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        text = head + body + tail
    else:
        text = text.rstrip("\n") + "\n\n" + body
    RESULTS.write_text(text)
    print(f"wrote {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="embedding table rows")
    parser.add_argument("--dim", type=int, default=16, help="embedding dimension")
    parser.add_argument("--change", type=float, default=0.05, help="rows changed per delta")
    parser.add_argument("--deltas", type=int, default=4, help="delta versions after the full")
    parser.add_argument("--mlflow", help="MLflow server URI (default: start one here)")
    args = parser.parse_args()
    service = None
    uri = args.mlflow
    if uri is None:
        from infra.services import free_port, start_service

        service = start_service("mlflow", free_port(), Path(tempfile.mkdtemp(prefix="mlflow-")))
        uri = service.url
    try:
        write_section(args, measure(args, uri))
    finally:
        if service is not None:
            service.stop()


if __name__ == "__main__":
    main()
