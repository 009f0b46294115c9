"""The rows the demo queries serving with: the feature schema's own (no services needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import demo_serving
from stages.common.errors import ConfigError
from stages.common.rows import RowParser
from stages.common.schema import load_schema
from stages.common.settings import CommonSettings, load_settings
from stages.ingest.core.synthetic import SyntheticConfig, generate_rows

TINY = """\
name: tiny
format: {kind: csv, header: true}
label: {name: y}
dense: [{name: x}]
categorical: [{name: c}]
"""


def _common(schema: str, tmp_path: Path) -> CommonSettings:
    return load_settings(CommonSettings, feature_schema=schema, state_dir=tmp_path)


def test_the_criteo_demo_queries_with_the_rows_it_always_did(tmp_path: Path) -> None:
    rows = demo_serving.probe_rows(_common("criteo", tmp_path), "synthetic")
    assert rows == generate_rows(SyntheticConfig(seed=7), 0, 5).rows


def test_the_ecommerce_demo_queries_with_events_of_its_stream(tmp_path: Path) -> None:
    rows = demo_serving.probe_rows(_common("ecommerce", tmp_path), "synthetic")
    parsed = RowParser.for_schema(load_schema("ecommerce")).parse(rows)
    assert len(rows) == 5 and parsed.bad == []


def test_a_schema_without_a_generator_queries_with_its_file_rows(tmp_path: Path) -> None:
    schema = tmp_path / "tiny.yaml"
    schema.write_text(TINY)
    source = tmp_path / "events.csv"
    source.write_text("c,y,x\nred,1,0.5\nblue,0,2\n")  # not the schema's column order
    common = _common(str(schema), tmp_path)
    assert demo_serving.probe_rows(common, str(source)) == [b"1,0.5,red", b"0,2,blue"]
    with pytest.raises(ConfigError, match="no generator for feature schema 'tiny'"):
        demo_serving.probe_rows(common, "synthetic")
