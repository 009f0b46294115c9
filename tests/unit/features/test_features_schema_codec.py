"""The schema-dependent parts of the features core: the codec and the store's schema key."""

import json

import pytest

from stages.common.schema import load_schema, parse_schema
from stages.features.core import SchemaCodec
from stages.features.store_schema import schema_key


def test_schema_key_exact_bytes() -> None:
    assert schema_key("ns") == b"freshrec:v1:{ns}:samples:schema"
    with pytest.raises(ValueError, match="bad Redis namespace"):
        schema_key("no spaces")


def test_codec_of_each_preset() -> None:
    criteo = SchemaCodec.for_schema(load_schema("criteo"))
    assert (criteo.block_layout.n_dense, criteo.block_layout.n_slots) == (13, 26)
    assert criteo.example_row() == b"0" + b"\t" * 39
    shop = SchemaCodec.for_schema(load_schema("ecommerce"))
    assert shop.block_layout.schema_hash == shop.schema_hash != criteo.schema_hash
    assert json.loads(shop.example_row()) == {"click": 0}
    assert shop.empty_stats().fields.sketched[-1] == "recent_items"


def test_example_row_follows_columns_and_nested_paths() -> None:
    csv = parse_schema({
        "name": "c", "format": {"kind": "csv", "columns": ["x", "_", "y"]},
        "label": {"name": "y"}, "dense": [{"name": "x"}],
    })
    assert SchemaCodec.for_schema(csv).example_row() == b",,0"
    nested = parse_schema({
        "name": "j", "format": {"kind": "jsonl"}, "label": {"name": "y", "path": "a.b"},
        "categorical": [{"name": "x"}],
    })
    assert json.loads(SchemaCodec.for_schema(nested).example_row()) == {"a": {"b": 0}}
