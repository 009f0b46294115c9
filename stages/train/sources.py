"""Where the trainer's samples come from: the Redis store (live) or a file (replay).

Rank 0 `poll`s; it then broadcasts the chunk's `token`, and the other ranks `fetch_until` that
token to get exactly the same rows, so all ranks see the same windows without sharing data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from stages.common.samples import SampleBatch
from stages.train.core.positions import SeqGap, StorePosition, advance
from stages.train.store import Entry, SampleStore

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
    at any block and the checkpoint holds that block's position). Never exhausted."""

    exhausted = False

    def __init__(self, store: SampleStore, position: StorePosition, read_count: int) -> None:
        self.store = store
        self.position = position
        self._count = read_count

    def close(self) -> None:
        self.store.close()

    def _chunks(self, entries: list[Entry]) -> list[Chunk]:
        chunks = []
        duplicates = 0
        for entry in entries:
            adv = advance(self.position, [entry])
            self.position = adv.position
            duplicates += adv.duplicates
            samples = adv.blocks[0].samples if adv.blocks else SampleBatch.concat([])
            chunks.append(
                Chunk(samples, adv.position.seq, adv.position.seq, adv.position.stream_id,
                      adv.gaps, adv.position)
            )
        if duplicates:
            log.warning(
                "skipped %d sample blocks with a seq already read (up to %s): the store's "
                "writer repeated sequence numbers", duplicates, self.position.stream_id,
            )
        return chunks

    def poll(self, timeout_s: float) -> list[Chunk]:
        """The next blocks, waiting up to `timeout_s` (capped to 1 s so a stop is noticed)."""
        return self._chunks(self.store.read(self.position, self._count, min(timeout_s, 1.0)))

    def fetch_until(self, token: str) -> list[Chunk]:
        return self._chunks(self.store.read_until(self.position, token, self._count))

    def checkpoint_fields(self, chunk: Chunk) -> dict[str, Any]:
        return {"store": chunk.store_after}
