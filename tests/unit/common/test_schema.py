"""The feature schema: presets load, every kind of mistake is one line naming the field, the
layout it compiles to, and the transform of each field kind."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from stages.common.errors import ConfigError
from stages.common.hashing import feature_ids
from stages.common.layout import compile_layout, Transform
from stages.common.model_export import ModelSpec
from stages.common.raw import RawColumns, string_value
from stages.common.schema import SchemaError, load_schema, parse_schema, preset_names
from stages.common.settings import CommonSettings

SHOP: dict[str, Any] = {
    "name": "shop",
    "format": {"kind": "jsonl"},
    "label": {"name": "click"},
    "event_time": {"name": "ts", "unit": "s"},
    "dense": [
        {"name": "price", "path": "item.price", "clip": [0, 100], "transform": "log1p"},
        {"name": "age", "type": "int", "missing": -1.0},
        {"name": "hour", "type": "int", "buckets": [6, 12, 18], "dim": 4},
    ],
    "categorical": [
        {"name": "user", "path": "user.id"},
        {"name": "item", "path": "item.id", "dim": 8},
        {"name": "device", "type": "int", "dim": 2},
    ],
    "multi": [{"name": "recent", "max_len": 3, "pooling": "sum", "share": "item"}],
    "crosses": [{"fields": ["device", "hour"]}],
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """SHOP with the value at a dotted path (list indexes as numbers) replaced."""
    data = copy.deepcopy(SHOP)
    node: Any = data
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return data


def test_presets_load_and_have_stable_hashes() -> None:
    assert set(preset_names()) >= {"criteo", "ecommerce"}
    criteo = load_schema("criteo")
    assert criteo.schema_id.startswith("criteo@") and len(criteo.schema_hash) == 16
    assert load_schema("criteo").schema_hash == criteo.schema_hash
    assert len(criteo.dense) == 13 and len(criteo.categorical) == 26
    assert criteo.columns()[0] == "label" and len(criteo.columns()) == 40
    assert load_schema("ecommerce").schema_hash != criteo.schema_hash


def test_the_description_does_not_change_the_hash() -> None:
    a = parse_schema(SHOP)
    b = parse_schema({**SHOP, "description": "another text"})
    assert a.schema_hash == b.schema_hash
    assert parse_schema(_with("dense.0.clip", [0, 50])).schema_hash != a.schema_hash


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_with("categorical.1.dim", 0), "categorical[1] ('item').dim: Input should be greater"),
        (_with("categorical.0.type", "uuid"), "categorical[0] ('user').type: Input should be"),
        (_with("categorical.1.name", "user"), "'user': name already used by a categorical field"),
        (_with("multi.0.share", "nope"), "recent.share: 'nope' is not another categorical"),
        (_with("multi.0.share", "device"), "recent.share: 'device' has type int"),
        (_with("dense.0.clip", [5, 1]), "dense[0] ('price'): clip low must be below high"),
        (_with("dense.2.buckets", [6, 6, 18]), "dense[2] ('hour'): buckets must be strictly"),
        (_with("dense.2.transform", "log1p"), "a bucketized field takes no transform"),
        (_with("dense.0.dim", 4), "dense[0] ('price'): dim is only for a field with buckets"),
        (_with("crosses.0.fields", ["device", "price"]), "'price' is not a categorical"),
        (_with("crosses.0.fields", ["device", "device"]), "a field appears twice"),
        (_with("multi.0.max_len", 0), "multi[0] ('recent').max_len: Input should be greater"),
        (_with("format.kind", "xml"), "format.kind: Input should be"),
        (_with("format.header", True), "header and columns are for tsv/csv"),
        (_with("name", "Shop Events"), "name: String should match pattern"),
        ({**SHOP, "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({k: v for k, v in SHOP.items() if k != "label"}, "label: Field required"),
        ({**SHOP, "dense": [], "categorical": [], "multi": [], "crosses": []},
         "declare at least one dense, categorical or multi field"),
    ],
)
def test_each_mistake_is_one_line_naming_the_field(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema(data, "shop.yaml")
    message = str(info.value)
    assert message.startswith("shop.yaml: ") and "\n" not in message
    assert expected in message, message
    assert isinstance(info.value, ConfigError)


def test_delimited_columns_are_checked() -> None:
    tsv = {**SHOP, "format": {"kind": "tsv", "columns": ["click", "ts", "price", "_"]}}
    with pytest.raises(SchemaError, match="format.columns: no column for 'age'"):
        parse_schema(tsv)
    tsv["format"] = {"kind": "tsv", "columns": ["click", "ts", "price", "nope"]}
    with pytest.raises(SchemaError, match="'nope' is not a declared field"):
        parse_schema(tsv)
    tsv["format"] = {"kind": "csv", "header": True}
    assert parse_schema(tsv).columns()[:3] == ("click", "ts", "price")


def test_load_schema_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="neither a preset .*criteo.* nor a file"):
        load_schema(str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SchemaError, match="bad.yaml: not valid YAML"):
        load_schema(str(bad))
    good = tmp_path / "shop.yaml"
    good.write_text(yaml.safe_dump(SHOP))
    assert load_schema(str(good)).name == "shop"


def test_settings_pick_the_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert CommonSettings().schema().name == "criteo"
    monkeypatch.setenv("FRESHREC_SCHEMA", "ecommerce")
    assert CommonSettings().schema().name == "ecommerce"
    monkeypatch.setenv("FRESHREC_SCHEMA", "nothing-like-it")
    with pytest.raises(SchemaError):
        CommonSettings().schema()


def test_the_mismatch_error_names_both_schemas() -> None:
    criteo = load_schema("criteo")
    with pytest.raises(SchemaError, match=f"another-hash, this stage runs {criteo.schema_id}"):
        criteo.check_same("another-hash", "the sample store")
    criteo.check_same(criteo.schema_hash, "the sample store")


def test_layout_of_every_field_kind() -> None:
    layout = compile_layout(parse_schema(SHOP), 16)
    assert layout.dense_names == ("price", "age") and layout.n_dense == 2
    names = [(g.name, g.first, g.n_slots, g.pooling, g.dim, g.deep) for g in layout.groups]
    assert names == [
        ("user", 0, 1, "none", 16, True), ("item", 1, 1, "none", 8, True),
        ("device", 2, 1, "none", 2, True), ("hour", 3, 1, "none", 4, True),
        ("recent", 4, 3, "sum", 16, True), ("device_x_hour", 7, 1, "none", 16, False),
    ]
    # recent shares item's table; the cross has a table of its own
    assert layout.slot_tables == (0, 1, 2, 3, 1, 1, 1, 5)
    spec = ModelSpec.from_layout(layout, "wide_deep", (8,))
    assert spec.embedding_dim == 16 and not spec.simple
    assert spec.deep_width == 16 + 8 + 2 + 4 + 16 + 2
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def _raw(n: int, dense: list[list[float]], cats: list[list[int | None]],
         multi: list[list[int]], max_len: int) -> RawColumns:
    cat_missing = np.array([[v is None for v in row] for row in cats], np.bool_)
    values = np.array([[0 if v is None else v for v in row] for row in cats], np.uint64)
    mv = np.zeros((n, max_len), np.uint64)
    for i, items in enumerate(multi):
        mv[i, : len(items)] = items
    return RawColumns(np.zeros(n, np.int8), np.array(dense, np.float64), values, cat_missing,
                      mv, np.array([[len(m)] for m in multi], np.int32))


def test_transform_of_each_field_kind() -> None:
    schema = parse_schema(SHOP)
    layout = compile_layout(schema, 16)
    t = Transform(schema, layout)
    u, i1, i2 = string_value("u1"), string_value("i1"), string_value("i2")
    raw = _raw(2, [[250.0, np.nan, 13.0], [np.nan, 30.0, np.nan]],
               [[u, i1, 3], [None, i2, None]], [[i1, i2], []], 3)
    dense = t.dense(raw)
    np.testing.assert_allclose(dense, [[np.log1p(100.0), -1.0], [0.0, 30.0]], rtol=1e-6)
    ids = t.ids(raw)
    missing = layout.missing_ids()
    assert ids[1, 0] == missing[0] and ids[1, 2] == missing[2]  # missing user, device
    assert ids[0, 1] == ids[0, 4] and ids[1, 1] == ids[0, 5]  # recent shares item's ids
    assert list(ids[1, 4:7]) == list(missing[4:7])  # an empty list is all padding
    assert ids[0, 3] != ids[1, 3] and ids[1, 3] == missing[3]  # hour 13 -> bucket 2; NaN
    assert len(set(ids[:, 7])) == 2  # the cross differs when its parts differ
    weights = layout.slot_weights(ids)
    np.testing.assert_array_equal(weights[:, 4:7], [[1, 1, 0], [0, 0, 0]])  # sum pooling


def test_criteo_ids_are_the_historic_ids() -> None:
    schema = load_schema("criteo")
    t = Transform(schema, compile_layout(schema, 16))
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**32, (50, 26), dtype=np.uint64)
    missing = rng.random((50, 26)) < 0.2
    raw = RawColumns(np.zeros(50, np.int8), rng.normal(size=(50, 13)) * 100, values, missing,
                     np.empty((50, 0), np.uint64), np.empty((50, 0), np.int32))
    np.testing.assert_array_equal(t.ids(raw), feature_ids(values.astype(np.uint32), missing))
    x = raw.dense
    np.testing.assert_allclose(t.dense(raw), np.sign(x) * np.log1p(np.abs(x)), rtol=1e-6)


def test_a_spec_from_before_schemas_is_the_same_model_as_criteo_spelled_out() -> None:
    old = ModelSpec("wide_deep", 16, (128, 64))
    new = ModelSpec.from_layout(compile_layout(load_schema("criteo"), 16), "wide_deep", (128, 64))
    assert old != new and old.same_model(new) and new.same_model(old)
    shop = ModelSpec.from_layout(compile_layout(parse_schema(SHOP), 16), "wide_deep", (128, 64))
    assert not shop.same_model(new)
    other = ModelSpec.from_layout(compile_layout(load_schema("criteo"), 16), "dcn", (128, 64), 1)
    assert not other.same_model(new)
