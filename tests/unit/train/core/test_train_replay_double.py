"""The replay source on the real Criteo sample, and the NumPy test double against the reference."""

import gzip
from pathlib import Path

import numpy as np
import pytest
from tests.unit.train.core.numpy_engine import NumpyLogisticEngine

from stages.common.model_export import ModelSpec
from stages.common.reference_model import predict as reference_predict
from stages.train.core.engine_protocol import Engine, EngineConfig
from stages.train.replay import ReplaySource

TINY = Path("/work/shared/data/criteo/criteo_tiny.tsv")
needs_data = pytest.mark.skipif(not TINY.is_file(), reason=f"Criteo sample absent: {TINY}")


@needs_data
def test_replay_chunks_cover_the_file_once(tmp_path: Path) -> None:
    src = ReplaySource(TINY, chunk_rows=300)
    chunks = []
    while polled := src.poll(0.0):
        chunks.extend(polled)
    src.close()
    assert src.exhausted
    assert [(c.first_seq, c.last_seq) for c in chunks] == [(1, 300), (301, 600), (601, 900), (901, 1000)]
    ts = np.concatenate([c.samples.event_time_ms for c in chunks])
    assert len(ts) + src.invalid_rows == 1000
    assert np.all(np.diff(ts) > 0)


@needs_data
def test_replay_resumes_and_reads_gzip_and_skips_bad_rows(tmp_path: Path) -> None:
    lines = TINY.read_bytes().splitlines(keepends=True)[:50]
    lines.insert(10, b"garbage\trow\n")
    gz = tmp_path / "rows.tsv.gz"
    with gzip.open(gz, "wb") as handle:
        handle.writelines(lines)
    src = ReplaySource(gz, skip_lines=20, chunk_rows=1000)
    (chunk,) = src.poll(0.0)
    assert (chunk.first_seq, chunk.last_seq) == (21, 51)
    assert src.poll(0.0) == [] and src.exhausted
    full = ReplaySource(gz)
    (first,) = full.poll(0.0)
    assert len(first.samples) == 50 and full.invalid_rows == 1


def test_missing_replay_file_is_a_train_error(tmp_path: Path) -> None:
    from stages.common.errors import TrainError

    with pytest.raises(TrainError, match="cannot read replay file"):
        ReplaySource(tmp_path / "absent.tsv")


@needs_data
def test_numpy_double_satisfies_protocol_and_exports_like_reference() -> None:
    spec = ModelSpec("wide_deep", embedding_dim=2, hidden_units=(4,))
    engine = NumpyLogisticEngine(EngineConfig(spec=spec, batch_size=128))
    assert isinstance(engine, Engine)
    src = ReplaySource(TINY, chunk_rows=1000)
    (batch,) = src.poll(0.0)
    engine.train(batch.samples.take(slice(0, 800)))
    test = batch.samples.take(slice(800, None))
    model = engine.export(1, True, {})
    assert model is not None
    np.testing.assert_allclose(
        reference_predict(model, test.dense, test.ids), engine.predict(test), atol=1e-5
    )
