"""Requests, the MLflow signature and the served schema for any feature schema (the ecommerce
preset beside Criteo): records keyed by field names, raw rows in the schema's format, and the
refusal of a model of another schema."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from stages.common.errors import ContractError
from stages.common.layout import Transform, compile_layout
from stages.common.model_export import ModelSpec
from stages.common.reference_model import predict
from stages.common.schema import SchemaError, load_schema
from stages.publish.core.invocations import csv_invocation, json_invocation
from stages.publish.core.requests import RequestError, RequestParser, json_to_inputs, text_to_inputs
from stages.publish.loaded import (
    LoadedModel, check_expected_schema, read_schema_json, schema_json, schema_of_spec,
)
from stages.publish.openapi import scoring_paths
from stages.publish.synthetic import full_export, schema_export, schema_rows, synthetic_records

SHOP = load_schema("ecommerce")
CRITEO = load_schema("criteo")
RECORDS = synthetic_records(SHOP, 12, np.random.default_rng(3))
LABELS = [i % 2 for i in range(12)]


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return LoadedModel(schema_export(SHOP, np.random.default_rng(4)), "1", "full", 0)


def _reference(model: LoadedModel) -> np.ndarray:
    """What reference_model predicts for RECORDS' raw rows parsed by the schema's RowParser."""
    from stages.common.rows import RowParser

    parsed = RowParser.for_schema(SHOP).parse([r.encode() for r in schema_rows(SHOP, RECORDS,
                                                                               LABELS)])
    assert not parsed.bad
    transform = Transform(SHOP, compile_layout(SHOP, model.export.spec.embedding_dim))
    return predict(model.export, transform.dense(parsed.raw), transform.ids(parsed.raw))


def test_records_and_raw_rows_give_the_reference_predictions(model: LoadedModel) -> None:
    want = _reference(model)
    parser = model.requests
    bodies = {
        "instances": json_to_inputs(json.dumps({"instances": RECORDS}).encode(), 50, parser),
        "rows": json_to_inputs(json.dumps({"rows": schema_rows(SHOP, RECORDS, LABELS)})
                               .encode(), 50, parser),
        "text, no label": text_to_inputs("\n".join(schema_rows(SHOP, RECORDS)).encode(), 50,
                                         parser),
    }
    for what, inputs in bodies.items():
        np.testing.assert_allclose(model.predict(inputs), want, atol=1e-6, err_msg=what)  # float32
    assert not bodies["text, no label"].has_label.any()


def test_mlflow_forms_of_records(model: LoadedModel) -> None:
    parser = model.requests
    want = model.predict(json_to_inputs(json.dumps({"instances": RECORDS}).encode(), 50, parser))
    names = list(SHOP.field_names())
    rows = schema_rows(SHOP, RECORDS)
    bodies = [
        {"dataframe_split": {"columns": names, "data": [[r[n] for n in names] for r in RECORDS]}},
        {"dataframe_records": RECORDS},
        {"inputs": {n: [r[n] for r in RECORDS] for n in names}},
        {"inputs": rows},
        {"dataframe_split": {"columns": ["row"], "data": [[r] for r in rows]}},
        # mixed: every other record as a raw row
        {"dataframe_records": [{"row": rows[i]} if i % 2 else rec
                               for i, rec in enumerate(RECORDS)]},
    ]
    for body in bodies:
        got = parser.inputs(json_invocation(json.dumps(body).encode(), 50, parser))
        np.testing.assert_allclose(model.predict(got), want, atol=1e-12, err_msg=str(body)[:80])
    header = ",".join(names)
    lines = [",".join("" if r[n] is None else "|".join(r[n]) if isinstance(r[n], list)
                      else str(r[n]) for n in names) for r in RECORDS]
    got = parser.inputs(csv_invocation("\n".join([header, *lines]).encode(), 50, parser))
    np.testing.assert_allclose(model.predict(got), want, atol=1e-12)


def test_record_values() -> None:
    parser = RequestParser(SHOP)
    full = {"price": "12.5", "hour": 3.0, "user": "u1", "item": "i2", "category": "c",
            "device": "web", "recent_items": ["i2", None, "i3"], "click": 1, "ts": 5}
    same = {**full, "price": 12.5, "hour": 3, "recent_items": "i2|i3"}
    a, b = (parser.records([r], 5).raw for r in (full, same))
    for name in ("dense", "cat_values", "multi_values", "multi_len"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.multi_len.tolist() == [[2]]
    many = parser.records([{"recent_items": [f"i{i}" for i in range(9)]}], 5).raw
    assert many.multi_len.tolist() == [[5]]  # max_len
    empty = parser.records([{}], 5).raw
    assert np.isnan(empty.dense).all() and empty.cat_missing.all() and not empty.multi_len.any()


@pytest.mark.parametrize(("record", "message"), [
    ({"price": "abc"}, "record 1: price must be a number, got 'abc'"),
    ({"hour": 1.5}, "record 1: hour must be an integer"),
    ({"user": 1.5}, "record 1: user must be a string"),
    ({"recent_items": 3}, "record 1: recent_items must be a list"),
    ({"shoe_size": 42}, "unknown field 'shoe_size'"),
])
def test_bad_records_get_a_422_naming_the_field(record: dict[str, object], message: str) -> None:
    with pytest.raises(RequestError) as err:
        RequestParser(SHOP).records([record], 5)
    assert err.value.status == 422 and message in str(err.value)


def test_a_bad_raw_row_is_named() -> None:
    rows = schema_rows(SHOP, RECORDS[:2])
    with pytest.raises(RequestError, match="row 2: ") as err:
        text_to_inputs(f"{rows[0]}\n{{not json".encode(), 5, RequestParser(SHOP))
    assert err.value.status == 422


def test_the_version_schema_must_be_the_model_s() -> None:
    shop = schema_export(SHOP, np.random.default_rng(5))
    with pytest.raises(ContractError, match="made with feature schema"):
        LoadedModel(shop, "1", "full", 0, CRITEO)
    assert LoadedModel(shop, "1", "full", 0).schema == SHOP  # a bundled preset, by hash
    legacy = full_export(ModelSpec("wide_deep", 4, (8,)), np.random.default_rng(6))
    assert LoadedModel(legacy, "1", "full", 0).schema == CRITEO  # made before schemas
    unknown = replace(shop, spec=replace(shop.spec, schema_hash="0" * 16))
    with pytest.raises(ContractError, match="no bundled preset"):
        LoadedModel(unknown, "1", "full", 0)
    assert schema_of_spec(shop.spec, read_schema_json(schema_json(SHOP), "t")) == SHOP


def test_a_serve_told_another_schema_refuses() -> None:
    check_expected_schema(None, SHOP, "v1")
    check_expected_schema(SHOP, SHOP, "v1")
    with pytest.raises(SchemaError, match=f"v1 was made with feature schema {SHOP.schema_id}, "
                                          f"but FRESHREC_SCHEMA names {CRITEO.schema_id}"):
        check_expected_schema(CRITEO, SHOP, "v1")


def test_signature_and_input_example_from_the_schema(model: LoadedModel) -> None:
    from stages.publish.pyfunc_model import model_inputs
    from stages.publish.version_model import input_example, signature

    sig = signature(SHOP)
    types = {c.name: str(c.type) for c in sig.inputs.inputs}
    assert list(types) == [*SHOP.field_names(), "row"]
    assert types["price"].endswith("double") and types["user"].endswith("string")
    assert "Array" in types["recent_items"] and "string" in types["recent_items"]
    assert all(not c.required for c in sig.inputs.inputs)
    assert [c.name for c in signature(CRITEO).inputs.inputs][:2] == ["I1", "I2"]
    example = input_example(SHOP)
    assert example.isna().any().any()
    probs = model.predict(model_inputs(model.requests, example))
    assert probs.shape == (2,) and np.isfinite(probs).all()
    frame = pd.DataFrame({"row": schema_rows(SHOP, RECORDS)})
    np.testing.assert_allclose(
        model.predict(model_inputs(model.requests, frame)),
        model.predict(model.requests.inputs(model.requests.records(RECORDS, 50))), atol=1e-12)


def test_openapi_lists_the_schema_fields() -> None:
    paths = scoring_paths(10, False, SHOP)
    body = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    record = body["properties"]["instances"]["items"]
    assert set(SHOP.field_names()) <= set(record["properties"])
    assert record["properties"]["recent_items"]["items"] == {"type": "string"}
    assert "I1" in scoring_paths(10, False, CRITEO)["/invocations"]["post"][
        "requestBody"]["content"]["text/csv"]["example"]
