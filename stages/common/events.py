"""The event contract: one Kafka record of the events topic (`freshrec.events`) per event.

Wire format, schema version 1 (UTF-8/ASCII, tab-separated, no trailing newline):

    key   = event_id
    value = b"1" TAB event_id TAB event_time_ms TAB <the 40-field Criteo row>

- `event_id` is unique per event: `<source>:<seq>` where `source` names the origin (1-32 chars of
  [A-Za-z0-9_.-]; ingest derives it from the file's identity, the generator's seed, ...) and `seq`
  is the 0-based position in that source. The same row of the same source always gets the same
  id, so a consumer can recognise a record that was sent twice.
- `event_time_ms` is milliseconds since the Unix epoch (the time the event happened; for Criteo
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

from stages.common.criteo import VALID_ROW, RawBatch, parse_valid_rows, row_error

EVENT_SCHEMA_VERSION = 1
_VERSION = b"%d" % EVENT_SCHEMA_VERSION
_EVENT_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,32}:[0-9]{1,19}$")


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
    if not parts[2].isdigit() or len(parts[2]) > 19:
        return f"bad event_time_ms {parts[2][:20]!r}"
    reason = row_error(parts[3])
    return None if reason is None else f"bad row: {reason}"


def decode_events(values: list[bytes]) -> DecodedEvents:
    """Decode a batch of record values. Never raises on bad input: bad records are returned."""
    ids: list[str] = []
    times: list[int] = []
    rows: list[bytes] = []
    good: list[int] = []
    bad: list[BadRecord] = []
    for index, value in enumerate(values):
        parts = value.split(b"\t", 3)
        if (
            len(parts) == 4
            and parts[0] == _VERSION
            and parts[2].isdigit()
            and len(parts[2]) <= 19
            and VALID_ROW.match(parts[3])
        ):
            event = parts[1].decode("utf-8", "replace")
            if _EVENT_ID.match(event):
                ids.append(event)
                times.append(int(parts[2]))
                rows.append(parts[3])
                good.append(index)
                continue
        bad.append(BadRecord(index, event_error(value) or "invalid event record"))
    batch = EventBatch(
        event_ids=ids,
        event_time_ms=np.asarray(times, dtype=np.int64),
        rows=parse_valid_rows(rows),
    )
    return DecodedEvents(events=batch, good_index=np.asarray(good, dtype=np.int64), bad=bad)
