import json

import numpy as np
import pytest

from stages.common.events import decode_events
from stages.common.hashing import splitmix64
from stages.common.transform import to_samples
from stages.features.core import FieldStats, hll_estimate, hll_registers

from .conftest import synthetic_events


def _stats(values: list[bytes]) -> FieldStats:
    decoded = decode_events(values)
    samples = to_samples(decoded.events.rows, decoded.events.event_time_ms)
    return FieldStats.of(decoded.events.rows, samples.ids)


def test_merge_of_parts_equals_stats_of_whole() -> None:
    values = synthetic_events(300, seed=3)
    whole = _stats(values)
    parts = _stats(values[:100]).merge(_stats(values[100:250])).merge(_stats(values[250:]))
    assert parts.rows == whole.rows == 300
    assert parts.clicks == whole.clicks
    for name in ("dense_count", "dense_missing", "dense_min", "dense_max", "cat_count",
                 "cat_missing", "hll"):
        assert np.array_equal(getattr(parts, name), getattr(whole, name)), name
    assert np.allclose(parts.dense_sum, whole.dense_sum)
    assert np.array_equal(FieldStats.empty().merge(whole).hll, whole.hll)


def test_dense_statistics_use_raw_values_and_skip_missing() -> None:
    decoded = decode_events(synthetic_events(50, seed=5))
    raw = decoded.events.rows
    stats = FieldStats.of(raw, np.zeros((50, 26), np.uint64))
    present = ~np.isnan(raw.dense[:, 0])
    assert stats.dense_count[0] == present.sum()
    assert stats.dense_missing[0] == 50 - present.sum()
    assert stats.dense_min[0] == raw.dense[present, 0].min()
    assert stats.dense_max[0] == raw.dense[present, 0].max()


def test_hyperloglog_estimates_distinct_ids() -> None:
    for n in (10, 1000, 50_000):
        ids = splitmix64(np.arange(n, dtype=np.uint64)).reshape(-1, 1)
        ids = np.concatenate([ids, ids])  # repeats do not count
        estimate = hll_estimate(hll_registers(ids)[0])
        assert abs(estimate - n) <= max(2, 0.05 * n), (n, estimate)


def test_hash_round_trip_and_format() -> None:
    stats = _stats(synthetic_events(120, seed=9))
    fields = stats.to_hash(version=7)
    label = json.loads(fields["label"])
    assert label == {"v": 1, "version": 7, "rows": 120, "clicks": stats.clicks,
                     "ctr": stats.clicks / 120}
    i1 = json.loads(fields["I1"])
    assert i1["mean"] == pytest.approx(i1["sum"] / i1["count"])
    c1 = json.loads(fields["C1"])
    assert c1["hll_p"] == 12 and c1["distinct"] > 0
    back = FieldStats.from_hash({k.encode(): v for k, v in fields.items()})
    assert np.array_equal(back.hll, stats.hll) and back.rows == 120
    assert np.array_equal(back.dense_min, stats.dense_min)


def test_empty_hash_is_empty_stats_and_min_max_null() -> None:
    assert FieldStats.from_hash({}).rows == 0
    fields = FieldStats.empty().to_hash(1)
    assert json.loads(fields["I3"])["min"] is None
    back = FieldStats.from_hash({k.encode(): v for k, v in fields.items()})
    assert np.isinf(back.dense_min).all()


def test_malformed_hash_is_a_value_error() -> None:
    fields = {k.encode(): v for k, v in FieldStats.empty().to_hash(1).items()}
    with pytest.raises(ValueError, match="malformed"):
        FieldStats.from_hash({**fields, b"C2": b"{not json"})
    with pytest.raises(ValueError, match="schema version"):
        FieldStats.from_hash({**fields, b"I1": b'{"v": 99}'})
