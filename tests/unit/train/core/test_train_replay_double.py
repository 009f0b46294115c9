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


def test_replay_of_ecommerce_json_lines_and_a_header_file(tmp_path: Path) -> None:
    import json

    from stages.common.layout import Transform, compile_layout
    from stages.common.rows import RowParser
    from stages.common.schema import load_schema, parse_schema

    shop = load_schema("ecommerce")
    events = [{"event_id": f"web-1:{i}", "ts": 1_700_000_000_000 + i, "click": i % 2,
               "user": {"id": f"u{i % 7}", "recent_items": [f"i{j}" for j in range(i % 6)]},
               "item": {"id": f"i{i % 11}", "category": "shoes", "price": 10.5 * i},
               "device": "mobile", "hour": i % 24} for i in range(30)]
    lines = [json.dumps(e) for e in events]
    lines.insert(5, '{"click": 1, "user": "not an object"}')
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    src = ReplaySource(path, chunk_rows=20, schema=shop, embedding_dim=8)
    first, second = src.poll(0.0), src.poll(0.0)
    assert src.poll(0.0) == [] and src.exhausted and src.invalid_rows == 1
    chunks = first + second
    assert [(c.first_seq, c.last_seq) for c in chunks] == [(1, 20), (21, 31)]
    samples = [c.samples for c in chunks]
    ts = np.concatenate([s.event_time_ms for s in samples])
    np.testing.assert_array_equal(ts, [e["ts"] for e in events])  # the schema's event time
    parsed = RowParser.for_schema(shop).parse([line.encode() for line in lines])
    transform = Transform(shop, compile_layout(shop, 8))
    np.testing.assert_array_equal(np.concatenate([s.ids for s in samples]),
                                  transform.ids(parsed.raw))
    resumed = ReplaySource(path, skip_lines=20, schema=shop)
    assert [c.first_seq for c in resumed.poll(0.0)] == [21]

    data = shop.model_dump(mode="json")  # the same fields as a CSV file with a header line
    data["format"] = {"kind": "csv", "header": True}
    data["multi"][0]["separator"] = "|"
    csv_schema = parse_schema(data)
    header = "price,click,user,item,category,device,hour,recent_items,event_id,ts,extra\n"
    rows = [f"{i}.5,{i % 2},u{i},i{i},c,web,{i},i1|i2,w:{i},{1000 + i},x\n" for i in range(5)]
    (tmp_path / "rows.csv").write_text(header + "".join(rows))
    src = ReplaySource(tmp_path / "rows.csv", schema=csv_schema)
    (chunk,) = src.poll(0.0)
    assert (chunk.first_seq, chunk.last_seq, len(chunk.samples)) == (2, 6, 5)
    np.testing.assert_array_equal(chunk.samples.event_time_ms, 1000 + np.arange(5))
    again = ReplaySource(tmp_path / "rows.csv", skip_lines=4, schema=csv_schema)
    (rest,) = again.poll(0.0)
    assert (rest.first_seq, len(rest.samples)) == (5, 2)
