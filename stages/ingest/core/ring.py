"""The most recently sent records, kept to be sent again after the broker lost them. Pure.

The embedded broker is restarted empty by its keeper (infra/services/broker_keeper.py) once
every group has read every topic to its end; records acknowledged between the keeper's check
and its kill are gone. Ingest keeps the newest records here, and when the events topic comes
back under a new topic id it sends them again (stages/ingest/resend.py). The features stage
drops the copies it had already stored by event id, so the ring must stay inside its dedupe
window (FRESHREC_FEATURES_DEDUPE_WINDOW, in seqs of one source per partition): see
`IngestSettings.resend_ring_records`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RingLimits:
    """Bounds of a `SentRing`: records (all partitions together), bytes (keys + values) and
    age in seconds; the oldest records go first when any is passed."""

    records: int
    bytes: int
    seconds: float


@dataclass
class _Chunk:
    at: float
    keys: list[bytes]
    values: list[bytes]
    size: int


class SentRing:
    """The newest records handed to the producer, in send order, within `RingLimits`."""

    def __init__(self, limits: RingLimits) -> None:
        self._limits = limits
        self._chunks: deque[_Chunk] = deque()
        self._records = 0
        self._bytes = 0

    def __len__(self) -> int:
        return self._records

    @property
    def size_bytes(self) -> int:
        """Bytes held (keys + values)."""
        return self._bytes

    def add(self, keys: list[bytes], values: list[bytes], now: float) -> None:
        """Keep records (key i, value i) sent at `now` (seconds, monotonic); drop the oldest
        beyond the limits (a batch larger than the limits keeps its newest records)."""
        if not values or self._limits.records <= 0:
            return
        size = sum(map(len, keys)) + sum(map(len, values))
        self._chunks.append(_Chunk(now, list(keys), list(values), size))
        self._records += len(values)
        self._bytes += size
        self.expire(now)

    def expire(self, now: float) -> None:
        """Drop the records older than the age limit and those beyond the other limits (past
        the byte limit whole batches go, oldest first)."""
        limits = self._limits
        while self._chunks:
            oldest = self._chunks[0]
            too_old = now - oldest.at > limits.seconds
            over = self._records - limits.records
            if not too_old and over <= 0 and self._bytes <= limits.bytes:
                return
            if too_old or over <= 0 or over >= len(oldest.values):
                self._drop_oldest()
                continue
            dropped = _size(oldest, over)
            oldest.keys, oldest.values = oldest.keys[over:], oldest.values[over:]
            oldest.size -= dropped
            self._records -= over
            self._bytes -= dropped

    def _drop_oldest(self) -> None:
        chunk = self._chunks.popleft()
        self._records -= len(chunk.values)
        self._bytes -= chunk.size

    def records(self) -> tuple[list[bytes], list[bytes]]:
        """(keys, values) of every record held, oldest first."""
        keys: list[bytes] = []
        values: list[bytes] = []
        for chunk in self._chunks:
            keys.extend(chunk.keys)
            values.extend(chunk.values)
        return keys, values


def _size(chunk: _Chunk, count: int) -> int:
    return sum(map(len, chunk.keys[:count])) + sum(map(len, chunk.values[:count]))
