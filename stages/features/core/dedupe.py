"""Dropping re-sent events by event id, within a bounded window. Pure: NumPy on whole batches.

Ingest gives every event a stable id `<tag>:<seq>` (stages/common/events.py): a resumed file,
a producer retry after a lost ack, a `--from-start` re-run send the same rows under the same
ids but at NEW Kafka offsets, so the offset watermarks cannot see them. This module decides,
per partition batch, which samples were already stored.

The state, per (topic, partition) and per source tag (`IdWindow`): the highest seq seen
(`high`) and a ring bitmap of `window` bits, bit `seq % window` set when `seq` was stored, for
the seqs in (high - window, high]. Per partition, not per tag across partitions: the producer
partitions by key (= event id), so every copy of an event lands in the same partition and the
partition's single writer owns its state (no cross-worker contention; see store.py for how the
state is kept atomically with the watermark).

The contract of `dedupe_batch`:
- a sample whose seq is within the window (seq > high - window, `high` taken after the
  batch) is kept the first time and dropped (`dropped`) when its bit is set or it occurred
  earlier in the batch (offset order: the first copy wins);
- a sample older than the window, of a source beyond `max_sources` (see below), or whose id
  does not parse is stored without a check (`unchecked`): events older than the window are
  NOT deduplicated, by design, and counted;
- at most `max_sources` tags are kept per partition: the tags of the batch first (already
  known ones, then new ones by event count), then the most recently used others; the rest are
  evicted (their later re-sends are not recognised).
Memory bound: partitions x max_sources x (16 + window / 8) bytes in Redis.
Dead letters carry no trusted id and are never dropped here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

_HEADER = 16  # int64 high, int64 used (little-endian)
# Seqs at or above this are not checked (the ring arithmetic stays far from int64 overflow).
_MAX_SEQ = 1 << 62


@dataclass(frozen=True)
class EventIdColumns:
    """Event ids `<tag>:<seq>` in columns: `tags` the distinct tags, `source[i]` the index of
    row i's tag in `tags`, `seq[i]` its seq (-1: not a parseable id)."""

    tags: tuple[str, ...]
    source: npt.NDArray[np.int32]
    seq: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.seq)

    def take(self, index: npt.NDArray[np.int64] | slice) -> EventIdColumns:
        """The rows at `index` (the tag list is shared)."""
        return EventIdColumns(self.tags, self.source[index], self.seq[index])

    @staticmethod
    def empty() -> EventIdColumns:
        return EventIdColumns((), np.empty(0, np.int32), np.empty(0, np.int64))


def parse_event_ids(ids: list[str]) -> EventIdColumns:
    """Split ids `<tag>:<seq>` in columns, in C (pyarrow). The ids must have passed the
    event contract (`stages.common.events`: exactly one ':', a seq of 1-19 digits); a seq
    >= 2**62 gets -1 (stored, never deduplicated)."""
    if not ids:
        return EventIdColumns.empty()
    parts = pc.split_pattern(pa.array(ids, pa.string()), ":", max_splits=1)
    encoded = pc.dictionary_encode(pc.list_element(parts, 0))
    raw = np.asarray(pc.cast(pc.list_element(parts, 1), pa.uint64()).to_numpy(zero_copy_only=False))
    seq = np.where(raw < _MAX_SEQ, raw, 0).astype(np.int64)
    seq[raw >= _MAX_SEQ] = -1
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int32)
    return EventIdColumns(tuple(encoded.dictionary.to_pylist()), codes, seq)


@dataclass(frozen=True)
class IdWindow:
    """One source tag in one partition: `high` the highest seq stored (-1: none), `used` the
    partition state version when the tag was last written (for eviction), `seen` the ring
    (bool[window]; seen[seq % window] for seqs in (high - window, high])."""

    high: int
    used: int
    seen: npt.NDArray[np.bool_]

    @classmethod
    def empty(cls, window: int) -> IdWindow:
        return cls(-1, 0, np.zeros(window, np.bool_))

    def to_bytes(self) -> bytes:
        """The stored form: int64 high, int64 used (little-endian), then the ring packed
        little-endian bit order (window / 8 bytes)."""
        head = np.asarray([self.high, self.used], "<i8").tobytes()
        return head + np.packbits(self.seen, bitorder="little").tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes, window: int) -> IdWindow:
        """Parse `to_bytes`; a blob written with another window size is re-windowed (the seqs
        it knows within the new window are kept). ValueError when it is malformed."""
        if len(blob) < _HEADER:
            raise ValueError(f"event-id window state of {len(blob)} bytes (< {_HEADER})")
        high, used = (int(x) for x in np.frombuffer(blob[:_HEADER], "<i8"))
        bits = np.unpackbits(np.frombuffer(blob[_HEADER:], np.uint8), bitorder="little")
        seen = bits.astype(np.bool_)
        if len(seen) == window:
            return cls(high, used, seen)
        old = len(seen)
        pos = np.flatnonzero(seen)
        seqs = high - ((high - pos) % old) if old else pos
        out = np.zeros(window, np.bool_)
        keep = seqs[seqs > high - window]
        out[keep % window] = True
        return cls(high, used, out)


@dataclass(frozen=True)
class PartitionIds:
    """The event-id state of one partition: `version` (bumped by every write of the partition
    that carries state; guards the cached copy) and its tags."""

    version: int
    windows: Mapping[str, IdWindow] = field(default_factory=dict)


@dataclass(frozen=True)
class DedupeConfig:
    """`window`: seqs per source tag that are checked (a multiple of 8; 0 turns the check
    off); `max_sources`: tags kept per partition."""

    window: int
    max_sources: int

    def __post_init__(self) -> None:
        if self.window < 0 or self.window % 8:
            raise ValueError(f"event-id window must be a multiple of 8 >= 0, got {self.window}")
        if self.max_sources < 1:
            raise ValueError(f"max_sources must be >= 1, got {self.max_sources}")


@dataclass(frozen=True)
class Verdict:
    """Which samples of a batch to keep (`keep`: sample row indices, ascending), how many were
    dropped as already seen and how many were stored unchecked, and the state to store:
    `updates` (tag -> window, used = version + 1) and the tags to `evict`."""

    keep: npt.NDArray[np.int64]
    dropped: int
    unchecked: int
    updates: dict[str, IdWindow]
    evict: list[str]


def dedupe_batch(ids: EventIdColumns, state: PartitionIds, config: DedupeConfig) -> Verdict:
    """Decide which samples (rows of `ids`, in offset order) were already stored; see the
    module docstring. Pure: `state` is not changed."""
    n = len(ids)
    all_rows = np.arange(n, dtype=np.int64)
    if config.window == 0 or n == 0:
        return Verdict(all_rows, 0, 0, {}, [])
    # Rows grouped by tag, offset order kept inside each group (stable sort).
    order = np.argsort(ids.source, kind="stable")
    present, starts, counts = np.unique(ids.source[order], return_index=True, return_counts=True)
    chosen = _choose_tags(ids, present, counts, state, config.max_sources)
    drop = np.zeros(n, np.bool_)
    unchecked = np.zeros(n, np.bool_)
    updates: dict[str, IdWindow] = {}
    for code, lo, size in zip(present.tolist(), starts.tolist(), counts.tolist()):
        rows = order[lo : lo + size]
        tag = ids.tags[code]
        if tag not in chosen:
            unchecked[rows] = True
            continue
        old = state.windows.get(tag) or IdWindow.empty(config.window)
        window, dup, old_rows = _check(old, ids.seq[rows], config.window, state.version + 1)
        updates[tag] = window
        drop[rows[dup]] = True
        unchecked[rows[old_rows]] = True
    kept_known = [t for t in state.windows if t not in updates]
    room = max(0, config.max_sources - len(updates))
    kept_known.sort(key=lambda t: state.windows[t].used, reverse=True)
    evict = kept_known[room:]
    return Verdict(
        np.flatnonzero(~drop).astype(np.int64),
        int(drop.sum()),
        int(unchecked.sum()),
        updates,
        evict,
    )


def _choose_tags(
    ids: EventIdColumns,
    present: npt.NDArray[np.int32],
    counts: npt.NDArray[np.int64],
    state: PartitionIds,
    max_sources: int,
) -> set[str]:
    """The batch's tags that get a window: known ones first, then new ones by count."""
    ranked = sorted(
        zip(present.tolist(), counts.tolist()),
        key=lambda pc_: (ids.tags[pc_[0]] not in state.windows, -pc_[1]),
    )
    return {ids.tags[code] for code, _ in ranked[:max_sources]}


def _check(
    old: IdWindow, seqs: npt.NDArray[np.int64], window: int, used: int
) -> tuple[IdWindow, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """The new window of a tag after `seqs` (offset order), which of them are duplicates,
    and which were stored unchecked (older than the window, or unparseable)."""
    valid = seqs >= 0
    high = max(old.high, int(seqs[valid].max())) if valid.any() else old.high
    seen = old.seen.copy()
    if old.high >= 0 and high > old.high:
        if high - old.high >= window:
            seen[:] = False
        else:  # the ring slots of (old.high, high] held seqs now out of the window
            seen[np.arange(old.high + 1, high + 1) % window] = False
    checked = valid & (seqs > high - window)
    index = np.flatnonzero(checked)
    pos = seqs[index] % window
    # The first copy of a seq in this batch (offset order) counts; np.unique gives the
    # first occurrence of each value.
    _, first = np.unique(seqs[index], return_index=True)
    repeat = np.ones(len(index), np.bool_)
    repeat[first] = False
    dup_in = seen[pos] | repeat
    seen[pos[~dup_in]] = True
    dup = np.zeros(len(seqs), np.bool_)
    dup[index[dup_in]] = True
    return IdWindow(high, used, seen), dup, ~checked
