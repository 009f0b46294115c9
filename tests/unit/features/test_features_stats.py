import json

import numpy as np
import pytest

from stages.common.hashing import splitmix64
from stages.common.layout import Transform, compile_layout
from stages.common.raw import RawColumns
from stages.common.schema import FeatureSchema, load_schema
from stages.features.core import FieldStats, StatsFields, hll_estimate, hll_registers

from .conftest import random_raw

CRITEO, SHOP = load_schema("criteo"), load_schema("ecommerce")


def _fields(schema: FeatureSchema) -> StatsFields:
    return StatsFields.of(schema, compile_layout(schema, 8))


def _stats(schema: FeatureSchema, raw: RawColumns) -> FieldStats:
    layout = compile_layout(schema, 8)
    return FieldStats.of(_fields(schema), raw, Transform(schema, layout).ids(raw))


def test_fields_follow_the_schema() -> None:
    criteo = _fields(CRITEO)
    assert criteo.label == "label" and criteo.dense[0] == "I1" and len(criteo.dense) == 13
    assert criteo.categorical[-1] == "C26" and criteo.multi == ()
    shop = _fields(SHOP)
    assert (shop.label, shop.dense, shop.categorical) == (
        "click", ("price", "hour"), ("user", "item", "category", "device"))
    (recent,) = shop.multi
    assert recent.name == "recent_items" and recent.n_slots == 5
    assert shop.sketched == ("user", "item", "category", "device", "recent_items")


@pytest.mark.parametrize("schema", [CRITEO, SHOP], ids=["criteo", "ecommerce"])
def test_merge_of_parts_equals_stats_of_whole(schema: FeatureSchema) -> None:
    raw = random_raw(schema, 300, seed=3)
    whole = _stats(schema, raw)
    parts = [_stats(schema, raw.take(slice(a, b))) for a, b in ((0, 100), (100, 250), (250, 300))]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.rows == whole.rows == 300
    assert merged.clicks == whole.clicks
    for name in ("dense_count", "dense_missing", "dense_min", "dense_max", "cat_count",
                 "cat_missing", "hll", "multi_values"):
        assert np.array_equal(getattr(merged, name), getattr(whole, name)), name
    assert np.allclose(merged.dense_sum, whole.dense_sum)
    empty = FieldStats.empty(_fields(schema))
    assert np.array_equal(empty.merge(whole).hll, whole.hll)


def test_dense_statistics_use_raw_values_and_skip_missing() -> None:
    raw = random_raw(CRITEO, 50, seed=5)
    stats = FieldStats.of(_fields(CRITEO), raw, np.zeros((50, 26), np.uint64))
    present = ~np.isnan(raw.dense[:, 0])
    assert stats.dense_count[0] == present.sum()
    assert stats.dense_missing[0] == 50 - present.sum()
    assert stats.dense_min[0] == raw.dense[present, 0].min()
    assert stats.dense_max[0] == raw.dense[present, 0].max()


def test_multi_field_counts_events_and_values_and_sketches_the_values_present() -> None:
    raw = random_raw(SHOP, 400, seed=11)
    stats = _stats(SHOP, raw)
    lengths = raw.multi_len[:, 0]
    assert stats.multi_values.tolist() == [int(lengths.sum())]
    assert stats.cat_count[-1] == (lengths > 0).sum() and stats.cat_missing[-1] == (lengths == 0).sum()
    # 50 possible values, padding excluded: about 50 distinct ids (a padding id would add one).
    assert 45 <= stats.distinct()[-1] <= 55
    # The bucketized dense field keeps raw statistics like any dense field.
    hour = _fields(SHOP).dense.index("hour")
    assert stats.dense_count[hour] == (~np.isnan(raw.dense[:, hour])).sum()


def test_hyperloglog_estimates_distinct_ids() -> None:
    for n in (10, 1000, 50_000):
        ids = splitmix64(np.arange(n, dtype=np.uint64)).reshape(-1, 1)
        ids = np.concatenate([ids, ids])  # repeats do not count
        estimate = hll_estimate(hll_registers(ids)[0])
        assert abs(estimate - n) <= max(2, 0.05 * n), (n, estimate)


def test_hash_round_trip_and_format() -> None:
    stats = _stats(CRITEO, random_raw(CRITEO, 120, seed=9))
    fields = stats.to_hash(version=7)
    label = json.loads(fields["label"])
    assert label == {"v": 1, "version": 7, "rows": 120, "clicks": stats.clicks,
                     "ctr": stats.clicks / 120}
    i1 = json.loads(fields["I1"])
    assert i1["mean"] == pytest.approx(i1["sum"] / i1["count"])
    c1 = json.loads(fields["C1"])
    assert c1["hll_p"] == 12 and c1["distinct"] > 0
    back = FieldStats.from_hash({k.encode(): v for k, v in fields.items()}, _fields(CRITEO))
    assert np.array_equal(back.hll, stats.hll) and back.rows == 120
    assert np.array_equal(back.dense_min, stats.dense_min)


def test_hash_of_a_schema_with_multi_fields() -> None:
    stats = _stats(SHOP, random_raw(SHOP, 80, seed=2))
    fields = stats.to_hash(version=3)
    assert set(fields) == {"click", "price", "hour", "user", "item", "category", "device",
                           "recent_items"}
    recent = json.loads(fields["recent_items"])
    assert recent["values"] == int(stats.multi_values[0]) and "hll" in recent
    back = FieldStats.from_hash({k.encode(): v for k, v in fields.items()}, _fields(SHOP))
    assert np.array_equal(back.hll, stats.hll) and back.multi_values.tolist() == stats.multi_values.tolist()
    assert back.merge(stats).rows == 160


def test_empty_hash_is_empty_stats_and_min_max_null() -> None:
    assert FieldStats.from_hash({}, _fields(CRITEO)).rows == 0
    fields = FieldStats.empty(_fields(CRITEO)).to_hash(1)
    assert json.loads(fields["I3"])["min"] is None
    back = FieldStats.from_hash({k.encode(): v for k, v in fields.items()}, _fields(CRITEO))
    assert np.isinf(back.dense_min).all()


def test_malformed_or_other_schema_hash_is_a_value_error() -> None:
    fields = {k.encode(): v for k, v in FieldStats.empty(_fields(CRITEO)).to_hash(1).items()}
    with pytest.raises(ValueError, match="malformed"):
        FieldStats.from_hash({**fields, b"C2": b"{not json"}, _fields(CRITEO))
    with pytest.raises(ValueError, match="schema version"):
        FieldStats.from_hash({**fields, b"I1": b'{"v": 99}'}, _fields(CRITEO))
    with pytest.raises(ValueError, match="another feature schema"):
        FieldStats.from_hash(fields, _fields(SHOP))
    with pytest.raises(ValueError, match="different feature schemas"):
        FieldStats.empty(_fields(CRITEO)).merge(FieldStats.empty(_fields(SHOP)))
