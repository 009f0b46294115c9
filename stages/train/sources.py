"""Where the trainer's samples come from: the Redis store (live) or a file (replay).

Rank 0 `poll`s; it then broadcasts the chunk's `token`, and the other ranks `fetch_until` that
token to get exactly the same rows, so all ranks see the same windows without sharing data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from stages.common.samples import SampleBatch
from stages.train.core.positions import SeqGap, StorePosition, advance
from stages.train.store import Entry, SampleReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """Rows read in one poll, in order. first_seq/last_seq: block seqs (store) or line numbers
    (replay), inclusive; token: where the reader is after it (opaque, the same on all ranks);
    gaps: blocks found missing before these."""

    samples: SampleBatch
    first_seq: int
    last_seq: int
    token: str
    gaps: list[SeqGap] = field(default_factory=list)
    store_after: StorePosition | None = None


class Source(Protocol):
    """Rank 0 `poll`s (a list of chunks in order, empty when nothing came); the other ranks
    `fetch_until` rank 0's last token and get the same chunks. `exhausted`: no more data."""

    exhausted: bool

    def poll(self, timeout_s: float) -> list[Chunk]: ...

    def fetch_until(self, token: str) -> list[Chunk]: ...

    def checkpoint_fields(self, chunk: Chunk) -> dict[str, Any]: ...

    def close(self) -> None: ...


class StoreSource:
    """The live sample stream, read after `position`, one chunk per block (so a window can end
    at any block and the checkpoint holds that block's position). Never exhausted.

    Blocks are decoded with the store's layout (the trainer's schema): a block of another schema
    stops the trainer with SchemaError (see `store.SampleReader`).

    A store that lost its data (Redis restarted empty or flushed) is noticed by its `epoch`
    key (or, for a position of an older checkpoint without one, by a block counter below the
    position): the reset is logged and counted (`resets`), and the new store is read from its
    start, so every sample stored after the reset is trained once. Checked at start, whenever
    the stream hands out a block seq already read, and every `EPOCH_CHECK_S` seconds.
    """

    exhausted = False
    EPOCH_CHECK_S = 10.0

    def __init__(self, store: SampleReader, position: StorePosition, read_count: int) -> None:
        self.store = store
        self._count = read_count
        self.resets = 0
        self.last_reset: str | None = None
        self._checked_at = time.monotonic()
        self.position = self._check_epoch(position)

    def close(self) -> None:
        self.store.close()

    def _check_epoch(self, position: StorePosition) -> StorePosition:
        self._checked_at = time.monotonic()
        current = self.store.epoch()
        if position.epoch == current:
            return position
        if position.epoch is None:
            last = self.store.last_seq()
            if position.seq <= last:
                return replace(position, epoch=current)
            reason = f"the store handed out blocks up to {last}, the trainer read up to {position.seq}"
        else:
            reason = f"store epoch {position.epoch} became {current}"
        self.resets += 1
        self.last_reset = reason
        log.warning(
            "the feature store was reset (%s): Redis restarted empty or was flushed, and the "
            "samples stored before are gone; training goes on from the start of the new store",
            reason,
        )
        return StorePosition("0-0", 0, current)

    def _chunks(self, entries: list[Entry]) -> list[Chunk]:
        chunks = []
        duplicates = 0
        layout = self.store.layout
        for entry in entries:
            adv = advance(self.position, [entry])
            self.position = adv.position
            duplicates += adv.duplicates
            samples = adv.blocks[0].samples if adv.blocks else SampleBatch.concat([], layout)
            chunks.append(
                Chunk(samples, adv.position.seq, adv.position.seq,
                      _token(adv.position), adv.gaps, adv.position)
            )
        if duplicates:
            log.warning(
                "skipped %d sample blocks with a seq already read (up to %s): the store's "
                "writer repeated sequence numbers", duplicates, self.position.stream_id,
            )
        return chunks

    def poll(self, timeout_s: float) -> list[Chunk]:
        """The next blocks, waiting up to `timeout_s` (capped to 1 s so a stop is noticed)."""
        if time.monotonic() - self._checked_at >= self.EPOCH_CHECK_S:
            self.position = self._check_epoch(self.position)
        entries = self.store.read(self.position, self._count, min(timeout_s, 1.0))
        if entries and entries[0][1].seq <= self.position.seq:
            checked = self._check_epoch(self.position)  # a seq already read: a new store?
            if checked != self.position:
                self.position = checked
                entries = self.store.read(self.position, self._count, 0)
        return self._chunks(entries)

    def fetch_until(self, token: str) -> list[Chunk]:
        epoch, _, stream_id = token.partition("|")
        if epoch != (self.position.epoch or ""):
            self.position = StorePosition("0-0", 0, epoch or None)  # rank 0 saw a reset
        return self._chunks(self.store.read_until(self.position, stream_id, self._count))

    def checkpoint_fields(self, chunk: Chunk) -> dict[str, Any]:
        return {"store": chunk.store_after}


def _token(position: StorePosition) -> str:
    """What rank 0 broadcasts: the store epoch and the last stream entry id."""
    return f"{position.epoch or ''}|{position.stream_id}"
