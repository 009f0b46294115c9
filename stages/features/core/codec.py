"""The schema-dependent parts of the features core, built once per worker from the schema.

`SchemaCodec.for_schema(schema)` bundles the schema's row parser (`stages.common.rows`), its
compiled layout and transform (`stages.common.layout`) and its statistics fields, so that the
core functions take one object instead of reading the schema again per micro-batch.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stages.common.events import DecodedEvents, EventBatch, decode_events
from stages.common.layout import Layout, Transform, compile_layout
from stages.common.raw import RawColumns
from stages.common.rows import RowParser
from stages.common.samples import BlockLayout, SampleBatch
from stages.common.schema import FeatureSchema, load_schema
from stages.common.transform import to_samples
from stages.features.core.stats import FieldStats, StatsFields

#: Embedding dimensions are the trainer's business: they change no sample, any value will do.
_ANY_DIM = 1


@dataclass(frozen=True)
class SchemaCodec:
    """Events -> samples and statistics for one feature schema."""

    schema: FeatureSchema
    layout: Layout
    parser: RowParser
    transform: Transform
    stats_fields: StatsFields

    @staticmethod
    def for_schema(schema: FeatureSchema) -> SchemaCodec:
        layout = compile_layout(schema, _ANY_DIM)
        return SchemaCodec(
            schema=schema,
            layout=layout,
            parser=RowParser.for_schema(schema),
            transform=Transform(schema, layout),
            stats_fields=StatsFields.of(schema, layout),
        )

    @property
    def schema_hash(self) -> str:
        return self.schema.schema_hash

    @property
    def block_layout(self) -> BlockLayout:
        """What the stored blocks of this schema look like (for `samples.decode_block`)."""
        return BlockLayout.of(self.layout)

    def decode(self, values: list[bytes]) -> DecodedEvents:
        """Decode record values (never raises on bad input, see `events.decode_events`)."""
        return decode_events(values, self.parser)

    def samples(self, events: EventBatch) -> SampleBatch:
        """The samples of decoded events, in order."""
        return to_samples(self.transform, events.rows, events.event_time_ms)

    def samples_of(self, raw: RawColumns, event_time_ms: npt.NDArray[np.int64]) -> SampleBatch:
        """The samples of raw rows (a parser's `ParsedRows.raw`) with these event times."""
        return to_samples(self.transform, raw, event_time_ms)

    def stats(self, raw: RawColumns, ids: npt.NDArray[np.uint64]) -> FieldStats:
        """The statistics of raw rows whose feature ids are `ids`."""
        return FieldStats.of(self.stats_fields, raw, ids)

    def empty_stats(self) -> FieldStats:
        return FieldStats.empty(self.stats_fields)

    def example_row(self) -> bytes:
        """A row of this schema's format with the label 0 and every other field missing."""
        schema = self.schema
        label = schema.label
        if schema.format.kind == "jsonl":
            value: dict[str, Any] = {}
            node = value
            *parents, leaf = label.json_path
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = 0
            return json.dumps(value, separators=(",", ":")).encode()
        separator = "\t" if schema.format.kind == "tsv" else ","
        return separator.join("0" if c == label.name else "" for c in schema.columns()).encode()


@functools.cache
def default_codec() -> SchemaCodec:
    """The codec of the default schema (FRESHREC_SCHEMA's default preset): what tools and tests
    get when they name none. The worker always passes the codec of its configured schema."""
    from stages.common.settings import CommonSettings

    return SchemaCodec.for_schema(load_schema(CommonSettings.model_fields["feature_schema"].default))
