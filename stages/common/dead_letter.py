"""The dead-letter record: one format for every stage that rejects input (ingest, features).

Topics: ingest writes `freshrec.events.dlq` (`FRESHREC_TOPIC_EVENTS_DLQ`), features writes its
own `FRESHREC_FEATURES_DLQ_TOPIC`. Both values are a `DeadLetterRecord` as compact JSON; read one
with `DeadLetterRecord.parse(value)`.

Schema version 1, exactly these fields:

    schema_version  1
    stage           "ingest" | "features": who rejected it
    reason          human-readable, e.g. "I3 is not an integer: 'abc'"
    kind            the reason without its detail, for counting ("I3 is not an integer")
    raw_b64         the rejected bytes, base64 (a line may be any bytes, not only UTF-8):
                    ingest: the line without its line end (cut to the line-length limit);
                    features: the Kafka record value
    raw_length      the real length of those bytes (larger than the decoded raw_b64 when cut)
    key_b64         the Kafka key of the record (ingest: the event id the row would have had),
                    base64, or null for a record without a key
    position        where it came from, one of
                      {"kind": "file", "source", "source_tag", "line", "seq"}   (ingest)
                      {"kind": "topic", "topic", "partition", "offset"}          (features)
    time_ms         when the stage read it, ms since the Unix epoch

Dead letters are rare: producers build one pydantic object per dead letter, never per valid row.
"""

from __future__ import annotations

import base64
from typing import Annotated, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stages.common.contract import Contract

DEAD_LETTER_SCHEMA_VERSION: Final = 1


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilePosition(_Part):
    """A line of an ingest source. source: a resolved file path, "-" (stdin) or "synthetic";
    source_tag: the event-id tag of the run; line: 1-based (in the current pass for --loop);
    seq: the sequence number the event would have had."""

    kind: Literal["file"] = "file"
    source: str
    source_tag: str
    line: int = Field(ge=1)
    seq: int = Field(ge=0)


class TopicPosition(_Part):
    """A Kafka record: topic, partition, offset."""

    kind: Literal["topic"] = "topic"
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


Position = Annotated[FilePosition | TopicPosition, Field(discriminator="kind")]


class DeadLetterRecord(Contract):
    """One rejected input (see the module docstring for the wire format)."""

    RECORD: ClassVar[str] = "dead letter"

    schema_version: Literal[1] = DEAD_LETTER_SCHEMA_VERSION
    stage: Literal["ingest", "features"]
    reason: str
    kind: str
    raw_b64: str
    raw_length: int = Field(ge=0)
    key_b64: str | None
    position: Position
    time_ms: int

    @field_validator("raw_b64", "key_b64")
    @classmethod
    def _is_base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except ValueError:
                raise ValueError("not base64") from None
        return value

    @classmethod
    def of(
        cls,
        *,
        stage: Literal["ingest", "features"],
        reason: str,
        kind: str,
        raw: bytes,
        key: bytes | None,
        position: FilePosition | TopicPosition,
        time_ms: int,
        raw_length: int | None = None,
    ) -> DeadLetterRecord:
        """The record of `raw` (base64-encoded here); raw_length defaults to len(raw)."""
        return cls(
            stage=stage,
            reason=reason,
            kind=kind,
            raw_b64=_b64(raw),
            raw_length=len(raw) if raw_length is None else raw_length,
            key_b64=None if key is None else _b64(key),
            position=position,
            time_ms=time_ms,
        )

    @property
    def raw(self) -> bytes:
        """The rejected bytes (decoded from raw_b64)."""
        return base64.b64decode(self.raw_b64, validate=True)

    @property
    def key(self) -> bytes | None:
        """The record's Kafka key (decoded from key_b64), or None."""
        return None if self.key_b64 is None else base64.b64decode(self.key_b64, validate=True)

    def value(self) -> bytes:
        """The Kafka record value: `to_json()` as UTF-8."""
        return self.to_json().encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
