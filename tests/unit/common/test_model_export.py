from pathlib import Path

import numpy as np
import pytest

from stages.common.errors import ContractError
from stages.common.hashing import fallback_ids
from stages.common.model_export import ModelExport, ModelSpec, apply_delta, read_export, write_export
from stages.common.reference_model import lookup_rows, predict

SPEC = ModelSpec("wide_deep", 4, (8,))


def _weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    d0 = 26 * 4 + 13
    return {
        "deep/0/kernel": rng.normal(size=(d0, 8)).astype(np.float32),
        "deep/0/bias": rng.normal(size=8).astype(np.float32),
        "head/kernel": rng.normal(size=(8, 1)).astype(np.float32),
        "head/bias": np.zeros(1, np.float32),
        "wide/kernel": rng.normal(size=(13, 1)).astype(np.float32),
        "wide/bias": np.zeros(1, np.float32),
    }


def _full(rng: np.random.Generator, ids: np.ndarray, seq: int = 1) -> ModelExport:
    ids = np.sort(ids.astype(np.uint64))
    return ModelExport(SPEC, "full", seq, None, _weights(rng), ids, rng.normal(size=(len(ids), 5)).astype(np.float32))


def test_round_trip_and_corruption(tmp_path: Path) -> None:
    model = _full(np.random.default_rng(0), np.concatenate([np.arange(50), fallback_ids(26)]))
    write_export(model, tmp_path / "e")
    back = read_export(tmp_path / "e")
    assert np.array_equal(back.rows, model.rows) and back.spec == SPEC
    rows_file = tmp_path / "e" / "embedding_rows.npy"
    data = bytearray(rows_file.read_bytes())
    data[-1] ^= 0xFF
    rows_file.write_bytes(bytes(data))
    with pytest.raises(ContractError, match="sha256"):
        read_export(tmp_path / "e")
    (tmp_path / "e" / "manifest.json").unlink()
    with pytest.raises(ContractError, match="not a complete export"):
        read_export(tmp_path / "e")


def test_delta_applies_in_order() -> None:
    rng = np.random.default_rng(1)
    base = _full(rng, np.arange(10))
    delta = ModelExport(
        SPEC, "delta", 2, 1, _weights(rng), np.array([3, 20], np.uint64),
        np.ones((2, 5), np.float32), evicted=np.array([4], np.uint64),
    )
    merged = apply_delta(base, delta)
    assert merged.ids.tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9, 20]
    assert np.all(merged.rows[merged.ids == 3] == 1.0)
    with pytest.raises(ContractError, match="applies onto"):
        apply_delta(merged, delta)


def test_absent_ids_use_the_fallback_row() -> None:
    fb = fallback_ids(26)
    table_ids = np.sort(np.concatenate([fb, np.array([7], np.uint64)]))
    rows = np.arange(len(table_ids) * 5, dtype=np.float32).reshape(-1, 5)
    ids = np.tile(np.array([7], np.uint64), (1, 26))
    ids[0, 1] = 12345  # unknown: field 1's fallback row
    got = lookup_rows(table_ids, rows, ids)
    assert np.array_equal(got[0, 0], rows[np.searchsorted(table_ids, 7)])
    assert np.array_equal(got[0, 1], rows[np.searchsorted(table_ids, fb[1])])
    model = _full(np.random.default_rng(2), table_ids)
    p = predict(model, np.zeros((1, 13), np.float32), ids)
    assert p.shape == (1,) and 0.0 < p[0] < 1.0


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="cross_layers"):
        ModelSpec("dcn", 4, (8,))
    with pytest.raises(ValueError, match="rows must be"):
        ModelExport(SPEC, "full", 1, None, {}, np.arange(2, dtype=np.uint64), np.zeros((2, 4), np.float32))
