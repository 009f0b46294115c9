"""The event contract: one Kafka record of the events topic (`freshrec.events`) per event.

Wire format, event schema version 2 (UTF-8, tab-separated, no line break anywhere):

    key   = event_id
    value = b"2" TAB schema_hash TAB event_id TAB event_time_ms TAB <row>

- `schema_hash` is the feature schema's `schema_hash` (16 hex digits): a consumer running
  another schema refuses the record (a bad record whose reason names both schemas).
- `event_id` is unique per event: `<source>:<seq>` (1-32 chars of [A-Za-z0-9_.-], ':', 1-19
  digits). Ingest takes it from the schema's event-id field when there is one, else derives it
  from the source (`<file tag>:<line - 1>`, the generator's seed and position, ...): the same row
  of the same source always gets the same id, so a consumer can recognise a record sent twice.
- `event_time_ms` is milliseconds since the Unix epoch (1 to 18 digits): the schema's event-time
  field when there is one, else the time ingest read the row (files) or the generator's time.
- `<row>` is the row in the schema's format, valid for `rows.RowParser.for_schema(schema)`:
  a delimited row with its columns in `schema.columns()` order (a header format's rows are
  re-ordered by ingest), or the JSON object of a jsonl row as it was read.
Version 1 (before feature schemas) had no schema hash and a Criteo row; it is refused.
Text keeps records readable with any Kafka tool and lets consumers parse whole batches in columns.
The key spreads events over partitions by event id (murmur2, like every Kafka client).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from stages.common.raw import RawColumns
from stages.common.row_values import EVENT_ID
from stages.common.rows import RowParser
from stages.common.rows_arrow import ArrowRowParser

EVENT_SCHEMA_VERSION = 2
_VERSION = b"%d" % EVENT_SCHEMA_VERSION
_EVENT_ID = re.compile(rf"^{EVENT_ID}\Z")
_TIME = re.compile(rb"^[0-9]{1,18}\Z")
_HEADER = (
    ("@v", pa.string()), ("@schema", pa.string()), ("@event_id", pa.string()),
    ("@event_time_ms", pa.int64()),
)  # fmt: skip


def event_id(source: str, seq: int) -> str:
    """The event id of row `seq` (0-based) of `source`."""
    return f"{source}:{seq}"


@functools.cache
def default_parser() -> RowParser:
    """The row parser of the default feature schema (`FRESHREC_SCHEMA`'s default, Criteo):
    what `encode_event`/`decode_events` use when given no schema."""
    from stages.common.schema import load_schema
    from stages.common.settings import CommonSettings

    schema = load_schema(str(CommonSettings.model_fields["feature_schema"].default))
    return RowParser.for_schema(schema)


def encode_event(
    event_id: str, event_time_ms: int, row: bytes, schema_hash: str | None = None
) -> bytes:
    """The record value of one event; `row` is a valid row of the schema (see the module
    docstring) without its line end. schema_hash: default, the default schema's."""
    schema = schema_hash if schema_hash is not None else default_parser().schema.schema_hash
    return b"%s\t%s\t%s\t%d\t%s" % (_VERSION, schema.encode(), event_id.encode(),
                                     event_time_ms, row)  # fmt: skip


@dataclass(frozen=True)
class EventBatch:
    """Decoded events in columns, in record order. `rows` holds their fields (raw values)."""

    event_ids: list[str]
    event_time_ms: npt.NDArray[np.int64]
    rows: RawColumns

    def __len__(self) -> int:
        return len(self.event_ids)


@dataclass(frozen=True)
class BadRecord:
    """A record that broke the contract: its position in the input batch and why."""

    index: int
    reason: str


@dataclass(frozen=True)
class DecodedEvents:
    """The result of decoding a batch: the good events (order kept) and the bad records.

    `good_index[i]` is the position in the input of `events` row i.
    """

    events: EventBatch
    good_index: npt.NDArray[np.int64]
    bad: list[BadRecord]


def _envelope_error(parts: list[bytes], value: bytes, parser: RowParser) -> str | None:
    """Why the header fields of a record (value split at its first 4 tabs) are wrong, or None."""
    if parts[0] != _VERSION:
        return (f"event record version {parts[0][:10].decode('utf-8', 'replace')!r}, this "
                f"build reads version {EVENT_SCHEMA_VERSION}")  # fmt: skip
    if len(parts) < 5:
        return "not an event record: fewer than 5 tab-separated fields"
    schema = parser.schema
    if parts[1] != schema.schema_hash.encode():
        return (f"event of feature schema {parts[1][:20].decode('utf-8', 'replace')!r}, this "
                f"stage runs {schema.schema_id}")  # fmt: skip
    if not _EVENT_ID.match(parts[2].decode("utf-8", "replace")):
        return f"bad event_id {parts[2][:40]!r}"
    if not _TIME.match(parts[3]):
        return f"bad event_time_ms {parts[3][:20]!r}"
    if b"\n" in value or b"\r" in value:
        return "a line break inside the record"
    return None


def event_error(value: bytes, parser: RowParser | None = None) -> str | None:
    """Why `value` is not a valid event record of the parser's schema, or None."""
    parser = parser or default_parser()
    parts = value.split(b"\t", 4)
    reason = _envelope_error(parts, value, parser)
    if reason is not None:
        return reason
    row_reason = parser.row_error(parts[4])
    return None if row_reason is None else f"bad row: {row_reason}"


def decode_events(values: list[bytes], parser: RowParser | None = None) -> DecodedEvents:
    """Decode a batch of record values of the parser's schema (default: the default schema).
    Never raises on bad input: bad records are returned with their reasons.

    A columnar schema (`rows_arrow`) is decided by one regex per record and parsed in columns;
    the others record by record.
    """
    parser = parser or default_parser()
    if isinstance(parser, ArrowRowParser):
        return _decode_columnar(values, parser)
    rows: list[bytes] = []
    envelope: list[int] = []
    bad: list[BadRecord] = []
    ids: list[str] = []
    times: list[int] = []
    for i, value in enumerate(values):
        parts = value.split(b"\t", 4)
        reason = _envelope_error(parts, value, parser)
        if reason is not None:
            bad.append(BadRecord(i, reason))
            continue
        rows.append(parts[4])
        envelope.append(i)
        ids.append(parts[2].decode())
        times.append(int(parts[3]))
    parsed = parser.parse(rows)
    bad.extend(BadRecord(envelope[k], f"bad row: {reason}") for k, reason in parsed.bad)
    bad.sort(key=lambda b: b.index)
    good = parsed.good_index.tolist()
    batch = EventBatch(
        event_ids=[ids[k] for k in good],
        event_time_ms=np.asarray([times[k] for k in good], np.int64),
        rows=parsed.raw,
    )
    index = np.asarray([envelope[k] for k in good], np.int64)
    return DecodedEvents(events=batch, good_index=index, bad=bad)


@functools.lru_cache(maxsize=16)
def _record_pattern(parser: ArrowRowParser) -> re.Pattern[bytes]:
    # \Z (not $) so that a trailing newline does not pass.
    head = b"%s\t%s\t%s\t[0-9]{1,18}\t" % (
        _VERSION, parser.schema.schema_hash.encode(), EVENT_ID.encode()
    )
    return re.compile(head + parser.pattern + rb"\Z")


def _decode_columnar(values: list[bytes], parser: ArrowRowParser) -> DecodedEvents:
    match = _record_pattern(parser).match
    good = [i for i, value in enumerate(values) if match(value)]
    bad = []
    if len(good) < len(values):
        keep = set(good)
        bad = [
            BadRecord(i, event_error(v, parser) or "invalid event record")
            for i, v in enumerate(values)
            if i not in keep
        ]
    if good:
        table = parser.read_table(b"\n".join([values[i] for i in good]), _HEADER)
        ids: list[str] = table.column("@event_id").to_pylist()
        times = table.column("@event_time_ms").to_numpy().astype(np.int64)
        raw = parser.raw_of(table)
    else:
        schema = parser.schema
        ids, times = [], np.empty(0, np.int64)
        raw = RawColumns.empty(len(schema.dense), len(schema.categorical), 0, 0)
    batch = EventBatch(event_ids=ids, event_time_ms=times, rows=raw)
    return DecodedEvents(events=batch, good_index=np.asarray(good, dtype=np.int64), bad=bad)
