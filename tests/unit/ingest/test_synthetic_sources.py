"""`--source synthetic` picks the generator of the schema (by name), or says there is none."""

from __future__ import annotations

import pytest

from stages.common.errors import ConfigError
from stages.common.events import decode_events
from stages.common.rows import RowParser
from stages.common.schema import load_schema, parse_schema
from stages.common.settings import load_settings
from stages.ingest.pipeline import prepared_parts
from stages.ingest.settings import IngestSettings
from stages.ingest.sources import SYNTHETIC, synthetic_source

SETTINGS = load_settings(IngestSettings, synthetic_seed=3)


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_each_bundled_schema_has_a_generator_whose_rows_are_valid(name: str) -> None:
    schema = load_schema(name)
    parts = [job() for job in prepared_parts(synthetic_source(schema, SETTINGS, 300), None,
                                             1000, schema)]  # fmt: skip
    assert sum(p.read for p in parts) == 300 and not any(p.dead for p in parts)
    values = [v for p in parts for v in p.values]
    decoded = decode_events(values, RowParser.for_schema(schema))
    assert len(decoded.events) == 300 and not decoded.bad
    assert decoded.events.event_time_ms.tolist() == sorted(decoded.events.event_time_ms.tolist())


def test_a_schema_without_a_generator_is_a_config_error() -> None:
    other = parse_schema({
        "name": "other", "format": {"kind": "jsonl"}, "label": {"name": "y"},
        "dense": [{"name": "x"}],
    })  # fmt: skip
    with pytest.raises(ConfigError, match="no generator for feature schema 'other'"):
        synthetic_source(other, SETTINGS, 10)
    renamed = load_schema("ecommerce").model_copy(update={"name": "ecommerce", "crosses": ()})
    with pytest.raises(ConfigError, match="is not the bundled ecommerce preset"):
        list(synthetic_source(renamed, SETTINGS, 10))
