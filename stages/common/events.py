"""The event contract: one Kafka record of the events topic (`freshrec.events`) per event.

Wire format, schema version 1 (UTF-8/ASCII, tab-separated, no trailing newline):

    key   = event_id
    value = b"1" TAB event_id TAB event_time_ms TAB <the 40-field Criteo row>

- `event_id` is unique per event: `<source>:<seq>` where `source` names the origin (1-32 chars of
  [A-Za-z0-9_.-]; ingest derives it from the file's identity, the generator's seed, ...) and `seq`
  is the 0-based position in that source. The same row of the same source always gets the same
  id, so a consumer can recognise a record that was sent twice.
- `event_time_ms` is milliseconds since the Unix epoch (1 to 18 digits) (the time the event happened; for Criteo
  files, which carry no time, the time ingest read the row).
- The Criteo row is validated by `criteo.row_error` before it is sent.
Text keeps records readable with any Kafka tool and lets consumers parse whole batches in columns.
The key spreads events over partitions by event id (murmur2, like every Kafka client).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

import pyarrow as pa

from stages.common.criteo import ROW_PATTERN, RawBatch, parse_valid_rows, raw_batch, read_table, row_error

EVENT_SCHEMA_VERSION = 1
_VERSION = b"%d" % EVENT_SCHEMA_VERSION
_EVENT_ID_PATTERN = r"[A-Za-z0-9_.\-]{1,32}:[0-9]{1,19}"
_EVENT_ID = re.compile(rf"^{_EVENT_ID_PATTERN}\Z")
# A whole valid record; \Z (not $) so that a trailing newline does not pass.
_VALID_EVENT = re.compile(
    b"1\t" + _EVENT_ID_PATTERN.encode() + rb"\t[0-9]{1,18}\t" + ROW_PATTERN + rb"\Z"
)
_HEADER = (("v", pa.string()), ("event_id", pa.string()), ("event_time_ms", pa.int64()))


def event_id(source: str, seq: int) -> str:
    """The event id of row `seq` (0-based) of `source`."""
    return f"{source}:{seq}"


def encode_event(event_id: str, event_time_ms: int, row: bytes) -> bytes:
    """The record value of one event; `row` is a valid Criteo row without its line end."""
    return b"%s\t%s\t%d\t%s" % (_VERSION, event_id.encode(), event_time_ms, row)


@dataclass(frozen=True)
class EventBatch:
    """Decoded events in columns, in record order. `rows` holds their Criteo fields."""

    event_ids: list[str]
    event_time_ms: npt.NDArray[np.int64]
    rows: RawBatch

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


def event_error(value: bytes) -> str | None:
    """Why `value` is not a valid version-1 event record, or None."""
    parts = value.split(b"\t", 3)
    if len(parts) < 4:
        return "not an event record: fewer than 4 tab-separated header fields"
    if parts[0] != _VERSION:
        return f"unsupported event schema version {parts[0][:10]!r} (this build reads {_VERSION!r})"
    if not _EVENT_ID.match(parts[1].decode("utf-8", "replace")):
        return f"bad event_id {parts[1][:40]!r}"
    if b"\n" in value or b"\r" in value:
        return "a line break inside the record"
    if not parts[2].isdigit() or len(parts[2]) > 18:
        return f"bad event_time_ms {parts[2][:20]!r}"
    reason = row_error(parts[3])
    return None if reason is None else f"bad row: {reason}"


def decode_events(values: list[bytes]) -> DecodedEvents:
    """Decode a batch of record values. Never raises on bad input: bad records are returned.

    One regex per record decides valid or not (the reason is computed for bad records only);
    the valid ones are parsed together in columns.
    """
    match = _VALID_EVENT.match
    good = [i for i, value in enumerate(values) if match(value)]
    bad = []
    if len(good) < len(values):
        keep = set(good)
        bad = [
            BadRecord(i, event_error(v) or "invalid event record")
            for i, v in enumerate(values)
            if i not in keep
        ]
    if good:
        table = read_table(b"\n".join([values[i] for i in good]), _HEADER)
        ids: list[str] = table.column("event_id").to_pylist()
        times = table.column("event_time_ms").to_numpy().astype(np.int64)
    else:
        table, ids, times = None, [], np.empty(0, np.int64)
    batch = EventBatch(
        event_ids=ids,
        event_time_ms=times,
        rows=raw_batch(table) if table is not None else parse_valid_rows([]),
    )
    return DecodedEvents(events=batch, good_index=np.asarray(good, dtype=np.int64), bad=bad)
