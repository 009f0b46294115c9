"""Where the trainer is in the sample store, and the pure rule that detects missed blocks.

Blocks carry sequence numbers 1, 2, 3, ... over the whole store (see `stages.common.samples`).
A reader that last read block `seq = s` expects `s + 1` next; a larger number means the blocks
in between were trimmed by retention before they were read (missed data, reported, never
fatal); a number <= s was already read and is skipped (never trained twice).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.common.samples import SampleBlock


@dataclass(frozen=True)
class StorePosition:
    """The last stream entry read (`stream_id`, Redis "ms-seq" form) and its block `seq`, in
    the store incarnation `epoch` (the store's `epoch` key; None: not known yet). The start of
    the stream is `StorePosition("0-0", 0)`."""

    stream_id: str = "0-0"
    seq: int = 0
    epoch: str | None = None


@dataclass(frozen=True)
class SeqGap:
    """Blocks `first..last` (inclusive) were never read: trimmed before the reader got there."""

    first: int
    last: int

    @property
    def blocks(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Advance:
    """The outcome of reading entries from a position: the blocks to use (stream order), the new
    position, the gaps found and how many entries were skipped as already read."""

    blocks: list[SampleBlock]
    position: StorePosition
    gaps: list[SeqGap] = field(default_factory=list)
    duplicates: int = 0

    @property
    def missed_blocks(self) -> int:
        return sum(g.blocks for g in self.gaps)


def advance(position: StorePosition, entries: list[tuple[str, SampleBlock]]) -> Advance:
    """Apply stream entries `(entry_id, block)`, read after `position` in stream order.

    The position always moves to the last entry id (so nothing is read twice); blocks with
    `seq <= position.seq` are dropped as duplicates; a jump in `seq` is a `SeqGap`.
    """
    blocks: list[SampleBlock] = []
    gaps: list[SeqGap] = []
    duplicates = 0
    stream_id, seq = position.stream_id, position.seq
    for entry_id, block in entries:
        stream_id = entry_id
        if block.seq <= seq:
            duplicates += 1
            continue
        if block.seq > seq + 1:
            gaps.append(SeqGap(seq + 1, block.seq - 1))
        seq = block.seq
        blocks.append(block)
    return Advance(blocks, StorePosition(stream_id, seq, position.epoch), gaps, duplicates)
