"""The trainer's description of one model export: `ExportMeta`, the `meta` of a `ModelExport`.

Producer: the trainer (`stages/train/trainer.py`) builds it for every export. Consumers: the
publisher (version tags, the quality gate), serving and the freshness benchmark
(`max_event_time_ms`). It travels inside the export's manifest.json as a JSON object; both sides
use this class, so a renamed or missing field is a ContractError at the publisher, never a tag
that silently reads "none".
"""

from __future__ import annotations

import math
from typing import Literal, Self

from pydantic import Field, model_validator

from stages.common.contract import Contract


class StoreRange(Contract):
    """Where the export's windows came from in the feature store: the stream entry id and block
    seq of the last block read (the store position to resume after)."""

    RECORD = "store position"
    stream_id: str
    seq: int = Field(ge=0)


class ReplayRange(Contract):
    """A replay of a file: its path and the rows trained from it so far."""

    RECORD = "replay position"
    file: str
    rows: int = Field(ge=0)


class ProgressiveMetrics(Contract):
    """Progressive validation of the export's last window (scored before training on it).

    A metric that is undefined for the window (one class only: no AUC) is None, never NaN."""

    RECORD = "progressive metrics"
    samples: int = Field(ge=0)
    positives: int = Field(ge=0)
    auc: float | None = None
    logloss: float | None = None
    ne: float | None = None
    calibration: float | None = None

    @model_validator(mode="after")
    def _finite(self) -> Self:
        for name in ("auc", "logloss", "ne", "calibration"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite or null, got {value}")
        return self


class ExportMeta(Contract):
    """What a trainer export holds.

    window_first/window_last: the trainer windows trained since the previous export (inclusive;
    window numbers continue across restarts). samples: samples trained over the trainer's life.
    store or replay: where the data came from (exactly one). metrics: the last window's
    progressive metrics. max_event_time_ms: the newest event time trained on by this trainer
    process (None before any event with a time)."""

    RECORD = "trainer export meta"
    schema_version: Literal[1] = 1
    window_first: int = Field(ge=0)
    window_last: int = Field(ge=0)
    samples: int = Field(ge=0)
    store: StoreRange | None = None
    replay: ReplayRange | None = None
    metrics: ProgressiveMetrics
    max_event_time_ms: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.window_first > self.window_last:
            raise ValueError(f"window_first {self.window_first} > window_last {self.window_last}")
        if (self.store is None) == (self.replay is None):
            raise ValueError("exactly one of store and replay must be given")
        return self

    def spanning(self, first: ExportMeta) -> ExportMeta:
        """This meta with its window range starting at `first`'s (exports folded into one
        registry version: the range of all of them, the rest from the newest)."""
        return self.model_copy(update={"window_first": min(first.window_first, self.window_first)})
