"""The lines of the feature store's `gaps` list (`keys.gaps(namespace)`): data that went missing.

Two stages append to it, each its own record kinds; every line is one compact JSON object:

    offset_gap      (features) Kafka offsets `expected` .. `got - 1` of a partition never
                    arrived at the worker: `OffsetGapRecord`. Written by the features stage's
                    Redis script (between micro-batches) and by its Python side (inside one).
    trimmed_blocks  (train) sample blocks `first_seq` .. `last_seq` were trimmed by the store's
                    retention before trainer `consumer` read them: `TrimmedBlocksRecord`.
    topic_reset     (features) the events topic was recreated (a broker that restarted empty, or
                    a topic deleted and created again): its Kafka topic id changed from
                    `old_topic_id` to `new_topic_id`, so the watermarks of the old incarnation
                    (`stored_offsets` offsets in `partitions` partitions) were reset to 0:
                    `TopicResetRecord`. Written by the features stage's Redis script.

Read a line with `parse_gap_line(line)`: the record of its `kind`, or ContractError (an unknown
kind, an unknown or missing field, another schema version).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Final, Literal

from pydantic import Field

from stages.common.contract import Contract
from stages.common.errors import ContractError

GAP_SCHEMA_VERSION: Final = 1


class OffsetGapRecord(Contract):
    """Offsets `expected` .. `got - 1` of `topic`:`partition` never arrived (features)."""

    RECORD: ClassVar[str] = "gap line (offset_gap)"

    schema_version: Literal[1] = GAP_SCHEMA_VERSION
    stage: Literal["features"] = "features"
    kind: Literal["offset_gap"] = "offset_gap"
    topic: str
    partition: int = Field(ge=0)
    expected: int = Field(ge=0)
    got: int = Field(ge=0)

    @property
    def missing(self) -> int:
        """How many offsets are missing."""
        return self.got - self.expected


class TrimmedBlocksRecord(Contract):
    """Sample blocks `first_seq` .. `last_seq` (inclusive, `blocks` of them) were trimmed before
    trainer `consumer` read them; time_ms: when it noticed (ms since the Unix epoch)."""

    RECORD: ClassVar[str] = "gap line (trimmed_blocks)"

    schema_version: Literal[1] = GAP_SCHEMA_VERSION
    stage: Literal["train"] = "train"
    kind: Literal["trimmed_blocks"] = "trimmed_blocks"
    consumer: str
    first_seq: int = Field(ge=1)
    last_seq: int = Field(ge=1)
    blocks: int = Field(ge=1)
    time_ms: int


class TopicResetRecord(Contract):
    """`topic` was recreated: its topic id went from `old_topic_id` to `new_topic_id` (features);
    the old incarnation's watermarks (`stored_offsets` offsets over `partitions` partitions) were
    reset to 0 so the new incarnation's offsets 0, 1, ... are stored, not skipped as replays.
    time_ms: when the features stage noticed (ms since the Unix epoch, Redis server time)."""

    RECORD: ClassVar[str] = "gap line (topic_reset)"

    schema_version: Literal[1] = GAP_SCHEMA_VERSION
    stage: Literal["features"] = "features"
    kind: Literal["topic_reset"] = "topic_reset"
    topic: str
    old_topic_id: str = Field(min_length=1)
    new_topic_id: str = Field(min_length=1)
    partitions: int = Field(ge=0)
    stored_offsets: int = Field(ge=0)
    time_ms: int


GapRecord = OffsetGapRecord | TrimmedBlocksRecord | TopicResetRecord
_BY_KIND: dict[str, type[OffsetGapRecord] | type[TrimmedBlocksRecord] | type[TopicResetRecord]] = {
    "offset_gap": OffsetGapRecord,
    "trimmed_blocks": TrimmedBlocksRecord,
    "topic_reset": TopicResetRecord,
}


def parse_gap_line(line: str | bytes) -> GapRecord:
    """The record of one `gaps` line, by its `kind`; ContractError when it breaks the contract."""
    try:
        fields: Any = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"gap line: not JSON ({exc})") from None
    kind = fields.get("kind") if isinstance(fields, dict) else None
    record = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if record is None:
        raise ContractError(f"gap line: unknown kind {kind!r} (expected one of {sorted(_BY_KIND)})")
    return record.parse(fields)
