"""Two Horovod processes on the CPU (Gloo): disjoint rows, unequal counts, sharded table, export.

The test writes a small worker script into its tmp dir and runs
`horovodrun -np 2 --gloo -H localhost:2 python worker.py OUT` with fixed seeds. Each rank trains
its own rows through three windows (300 vs 100 rows, 150 vs 0, 0 vs 80: a rank with no rows
must not hang a collective), checks that its shard holds only ids with id % 2 == rank, scores a
probe set of its own, and rank 0 writes the full export. The test then checks every rank's
predictions against `reference_model.predict` on that export, and that the replicated dense
weights (and running statistics) are equal on both ranks. Layouts: Criteo's (the simple path),
and the ecommerce preset with a standardised price (pooled, narrow, wide-only and standardised
inputs, `tests/unit/train/engine/layouts.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.common import reference_model
from stages.common.model_export import read_export

REPO = Path(__file__).resolve().parents[3]
HOROVODRUN = Path(sys.executable).with_name("horovodrun")

WORKER = r'''
import json, os, sys
from pathlib import Path
import numpy as np
from stages.common.hashing import feature_ids
from stages.common.model_export import ModelSpec, write_export
from stages.common.samples import SampleBatch
from stages.train.core.engine_protocol import EngineConfig
from stages.train.engine import TFEngine
from stages.common.layout import compile_layout
from tests.unit.train.engine import layouts

out = Path(sys.argv[1])
model = sys.argv[2]
layout = sys.argv[3]
schema = layouts.standardized()

def batch(seed, n):
    rng = np.random.default_rng(seed)
    if layout == "ecommerce":
        return layouts.sample(schema, rng, n, vocab=300, dim=4)
    values = rng.zipf(1.3, size=(n, 26)).astype(np.uint32) % np.uint32(300)
    dense = rng.normal(size=(n, 13)).astype(np.float32)
    label = (rng.random(n) < 1 / (1 + np.exp(-dense[:, 0]))).astype(np.uint8)
    return SampleBatch(label, dense, feature_ids(values, rng.random((n, 26)) < 0.1),
                       np.zeros(n, np.int64))

cross = 1 if model == "dcn" else 0
if layout == "ecommerce":
    spec = ModelSpec.from_layout(compile_layout(schema, 4), model, (8,), cross)
else:
    spec = ModelSpec(model, 4, (8,), cross_layers=cross)
eng = TFEngine(EngineConfig(spec=spec, batch_size=32, table_capacity=1500, admit_after=2,
                            evict_after_steps=8, seed=0))
assert (eng.rank, eng.size) == (int(os.environ["HOROVOD_RANK"]), 2)
rows = {0: [300, 150, 0], 1: [100, 0, 80]}[eng.rank]
log = []
for window, n in enumerate(rows):
    part = batch(100 * window + eng.rank, n)
    p = eng.predict(part)
    r = eng.train(part)
    log.append({"n": n, "pred": len(p), "samples": r.samples, "steps": r.steps,
                "table_size": r.table_size, "evicted": r.evicted})
ids, _ = eng.table.admitted()
probe = batch(999 + eng.rank, 64 + 16 * eng.rank)
export = eng.export(1, True, {"ranks": 2})
if eng.rank == 0:
    write_export(export, out / "export")
np.save(out / f"probe_dense_{eng.rank}.npy", probe.dense, allow_pickle=False)
np.save(out / f"probe_ids_{eng.rank}.npy", probe.ids, allow_pickle=False)
np.save(out / f"probe_pred_{eng.rank}.npy", eng.predict(probe), allow_pickle=False)
np.savez(out / f"dense_{eng.rank}.npz",
         **{k.replace("/", "_"): v for k, v in eng.net.dense_numpy().items()})
summary = {"rank": eng.rank, "log": log, "shard": len(ids), "table_size": eng.table_size(),
           "owned_ok": bool(np.all(ids % np.uint64(2) == eng.rank))}
(out / f"summary_{eng.rank}.json").write_text(json.dumps(summary))
'''


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("model", ["wide_deep", "dcn"])
@pytest.mark.parametrize(("layout", "fallbacks"), [("criteo", 26), ("ecommerce", 7)])
def test_two_ranks_on_cpu(tmp_path: Path, model: str, layout: str, fallbacks: int) -> None:
    if not HOROVODRUN.exists() or shutil.which("horovodrun", path=str(HOROVODRUN.parent)) is None:
        pytest.skip(f"horovodrun not found next to {sys.executable}: build Horovod (make install)")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO)}
    cmd = [str(HOROVODRUN), "-np", "2", "--gloo", "-H", "localhost:2",
           sys.executable, str(script), str(tmp_path), model, layout]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summaries = [json.loads((tmp_path / f"summary_{r}.json").read_text()) for r in (0, 1)]
    for rank, summary in enumerate(summaries):
        assert summary["owned_ok"], f"rank {rank} holds ids it does not own"
        assert [w["samples"] for w in summary["log"]] == [[300, 150, 0], [100, 0, 80]][rank]
        assert [w["pred"] for w in summary["log"]] == [w["n"] for w in summary["log"]]
    total = summaries[0]["shard"] + summaries[1]["shard"]
    assert summaries[0]["table_size"] == summaries[1]["table_size"] == total
    assert 0 < total <= 1500
    assert min(s["shard"] for s in summaries) > 0  # both ranks own rows
    for w0, w1 in zip(summaries[0]["log"], summaries[1]["log"]):
        assert w0["table_size"] == w1["table_size"] and w0["evicted"] == w1["evicted"]

    export = read_export(tmp_path / "export")
    assert len(export.ids) == total + fallbacks
    assert ("norm/mean" in export.dense) == (layout == "ecommerce")
    with np.load(tmp_path / "dense_0.npz") as d0, np.load(tmp_path / "dense_1.npz") as d1:
        assert sorted(d0.files) == sorted(d1.files)
        for name in d0.files:  # summed gradients and statistics: the same weights everywhere
            np.testing.assert_array_equal(d0[name], d1[name], err_msg=name)
    for rank in (0, 1):
        dense = np.load(tmp_path / f"probe_dense_{rank}.npy")
        ids = np.load(tmp_path / f"probe_ids_{rank}.npy")
        pred = np.load(tmp_path / f"probe_pred_{rank}.npy")
        expected = reference_model.predict(export, dense, ids)
        np.testing.assert_allclose(pred, expected, atol=1e-5, rtol=0)
